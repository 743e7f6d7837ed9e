"""One optimisation step through megatron-core's pipeline schedules, DDP and optimizer.

The loss is a per-token mean over the whole global batch: each micro-batch returns
``(sum of token losses, token count)`` and megatron-core divides the summed gradients by the
global token count (``calculate_per_token_loss``). Pad and masked tokens therefore never dilute
the loss, and every DP/PP layout computes the same number as one process does.

A NaN/inf loss or gradient anywhere is agreed on by all ranks (one tiny all-reduce) and the update
is skipped, so one bad batch never reaches the weights (``training/finite.py``: megatron-core
skips on non-finite gradients only with fp16's loss scaler).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from megatron.core import parallel_state
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import get_batch_on_this_cp_rank

from megatron_dscoder.parallel.distributed import any_rank
from megatron_dscoder.training import finite


@dataclass(frozen=True)
class StepResult:
    """What one iteration reports; ``lm_loss`` is None on ranks that do not hold the loss."""

    lm_loss: float | None
    grad_norm: float
    skipped: bool
    reason: str = ""
    """Why the update was skipped: "loss" or "gradient" (non-finite)."""


def loss_func(
    loss_mask: torch.Tensor, poison: bool, output_tensor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token losses [b, s] -> (masked sum, token count, values to report)."""
    losses = output_tensor.float().view(-1)
    if poison:  # fault injection: a genuinely non-finite loss and gradient
        losses = losses * float("nan")
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), num_tokens.float()])
    return loss_sum, num_tokens, {"lm loss": report}


def make_forward_step(poison: bool = False):
    """megatron-core's forward-step callback: run the model chunk on the next micro-batch."""

    def forward_step(data_iterator: Iterator[dict[str, torch.Tensor]], model: torch.nn.Module):
        batch = next(data_iterator)
        device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if parallel_state.get_context_parallel_world_size() > 1:
            # This CP rank's two load-balanced chunks of every sequence ([b, s] -> [b, s/cp]).
            batch = get_batch_on_this_cp_rank(batch)
        output = model(
            batch["tokens"], batch["position_ids"], attention_mask=None, labels=batch["labels"]
        )
        return output, partial(loss_func, batch["loss_mask"], poison)

    return forward_step


def _loss_sums(losses: list[dict[str, torch.Tensor]]) -> torch.Tensor | None:
    """[sum, count] over the global batch on the last pipeline stage (None elsewhere)."""
    if not parallel_state.is_pipeline_last_stage():
        return None
    total = torch.stack([entry["lm loss"] for entry in losses]).sum(dim=0)
    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    torch.distributed.all_reduce(total, group=group)
    return total


def _global_batch(
    model: list[torch.nn.Module],
    data_iterator: Iterator[dict[str, torch.Tensor]],
    *,
    forward_only: bool,
    poison: bool = False,
    **shape: int,
) -> torch.Tensor | None:
    """Forward (and backward unless ``forward_only``) over the micro-batches of one global batch
    through megatron-core's pipeline schedule; the [loss sum, tokens] of :func:`_loss_sums`."""
    losses = get_forward_backward_func()(
        forward_step_func=make_forward_step(poison),
        data_iterator=data_iterator,
        model=model,
        forward_only=forward_only,
        **shape,
    )
    return _loss_sums(losses)


def train_step(
    model: list[torch.nn.Module],
    optimizer: MegatronOptimizer,
    data_iterator: Iterator[dict[str, torch.Tensor]],
    *,
    num_microbatches: int,
    seq_length: int,
    micro_batch_size: int,
    poison: bool = False,
    poison_grad: bool = False,
) -> StepResult:
    """Forward and backward over all micro-batches, then one optimizer update (unless NaN/inf)."""
    for chunk in model:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    sums = _global_batch(
        model,
        data_iterator,
        forward_only=False,
        poison=poison,
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
    )
    lm_loss = None if sums is None else float(sums[0] / sums[1].clamp(min=1))
    if poison_grad and torch.distributed.get_rank() == 0:
        finite.poison_grads(model)
    bad_loss = lm_loss is not None and not torch.isfinite(torch.tensor(lm_loss))
    if any_rank(bad_loss)[0]:
        return StepResult(lm_loss=lm_loss, grad_norm=float("nan"), skipped=True, reason="loss")
    if any_rank(not finite.grads_finite(model))[0]:
        return StepResult(lm_loss=lm_loss, grad_norm=float("nan"), skipped=True, reason="gradient")
    success, grad_norm, _ = optimizer.step()
    if not success:  # fp16's loss scaler found inf/NaN gradients and skipped the update itself
        return StepResult(lm_loss=lm_loss, grad_norm=float("nan"), skipped=True, reason="gradient")
    return StepResult(lm_loss=lm_loss, grad_norm=float(grad_norm or 0.0), skipped=False)


@torch.no_grad()
def evaluate(
    model: list[torch.nn.Module],
    data_iterator: Iterator[dict[str, torch.Tensor]],
    *,
    eval_iters: int,
    num_microbatches: int,
    seq_length: int,
    micro_batch_size: int,
) -> float | None:
    """Mean token loss over ``eval_iters`` global batches (None off the last stage)."""
    for chunk in model:
        chunk.eval()
    total = None
    for _ in range(eval_iters):
        sums = _global_batch(
            model,
            data_iterator,
            forward_only=True,
            num_microbatches=num_microbatches,
            seq_length=seq_length,
            micro_batch_size=micro_batch_size,
        )
        if sums is not None:
            total = sums if total is None else total + sums
    for chunk in model:
        chunk.train()
    return None if total is None else float(total[0] / total[1].clamp(min=1))
