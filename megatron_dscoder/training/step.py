"""One optimisation step through megatron-core's pipeline schedules, DDP and optimizer.

The loss is a per-token mean over the whole global batch: each micro-batch returns
``(sum of token losses, token count)`` and megatron-core divides the summed gradients by the
global token count (``calculate_per_token_loss``). Pad and masked tokens therefore never dilute
the loss, and every DP/PP layout computes the same number as one process does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from megatron.core import parallel_state
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.pipeline_parallel import get_forward_backward_func


@dataclass(frozen=True)
class StepResult:
    """What one iteration reports; ``lm_loss`` is NaN on ranks that do not hold the loss."""

    lm_loss: float
    grad_norm: float
    num_tokens: int
    update_successful: bool


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token losses [b, s] -> (masked sum, token count, values to report)."""
    losses = output_tensor.float().view(-1)
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), num_tokens.float()])
    return loss_sum, num_tokens, {"lm loss": report}


def forward_step(data_iterator: Iterator[dict[str, torch.Tensor]], model: torch.nn.Module):
    """megatron-core's forward-step callback: run the model chunk on the next micro-batch."""
    batch = next(data_iterator)
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    output = model(batch["tokens"], batch["position_ids"], attention_mask=None,
                   labels=batch["labels"])
    return output, partial(loss_func, batch["loss_mask"])


def _reduce_loss(losses: list[dict[str, torch.Tensor]]) -> float:
    """Global mean token loss on the last pipeline stage (NaN elsewhere)."""
    if not parallel_state.is_pipeline_last_stage():
        return float("nan")
    total = torch.stack([entry["lm loss"] for entry in losses]).sum(dim=0)
    torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return float(total[0] / total[1].clamp(min=1))


def train_step(model: list[torch.nn.Module], optimizer: MegatronOptimizer,
               data_iterator: Iterator[dict[str, torch.Tensor]], *, num_microbatches: int,
               seq_length: int, micro_batch_size: int) -> StepResult:
    """Forward and backward over all micro-batches, then one optimizer update."""
    for chunk in model:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    losses = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=data_iterator,
        model=model,
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=False,
    )
    update_successful, grad_norm, _ = optimizer.step()
    lm_loss = _reduce_loss(losses)
    num_tokens = num_microbatches * micro_batch_size * seq_length
    return StepResult(lm_loss=lm_loss, grad_norm=float(grad_norm or 0.0), num_tokens=num_tokens,
                      update_successful=bool(update_successful))
