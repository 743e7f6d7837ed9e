"""Non-finite gradients and weights, found before they do harm.

megatron-core's ``optimizer.step()`` skips an update on inf/NaN gradients only with a loss scaler
(fp16). In fp32 and bf16 it clips by the global norm, and a NaN norm makes the clip coefficient
NaN, the ``coeff < 1`` test false and the update proceeds: a finite loss with one NaN gradient
element turns every weight NaN. :func:`grads_finite` checks the reduced gradient buffers of every
model chunk before the step; the caller agrees on the answer across all ranks (one all-reduce), so
every layout skips the same iterations. With the distributed optimizer each buffer holds this
rank's reduced shard next to unreduced local values; a non-finite value in either reaches some
rank's reduced shard, so the agreed answer is the same as checking the reduced gradients.

:func:`weights_finite` guards the save: a checkpoint is never written from non-finite weights.
"""

from __future__ import annotations

import torch


def _grad_tensors(model: list[torch.nn.Module]) -> list[torch.Tensor]:
    tensors = []
    for chunk in model:
        buffers = getattr(chunk, "buffers", None)
        if isinstance(buffers, list):  # megatron DDP: contiguous gradient buffers
            tensors += [b.grad_data for b in buffers + chunk.expert_parallel_buffers]
        else:
            for p in chunk.parameters():
                grad = getattr(p, "main_grad", None)
                grad = p.grad if grad is None else grad
                if grad is not None:
                    tensors.append(grad)
    return tensors


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one device sync at the end)."""
    ok = [torch.isfinite(t).all() for t in tensors if t.numel()]
    return bool(torch.stack(ok).all()) if ok else True


def grads_finite(model: list[torch.nn.Module]) -> bool:
    """This rank's gradients (after the data-parallel reduction) are all finite."""
    return all_finite(_grad_tensors(model))


def weights_finite(model: list[torch.nn.Module]) -> bool:
    """This rank's weights are all finite."""
    return all_finite([p.detach() for chunk in model for p in chunk.parameters()])


def poison_grads(model: list[torch.nn.Module]) -> None:
    """Fault injection for tests: one NaN gradient element on this rank (the loss stays finite)."""
    tensors = _grad_tensors(model)
    if tensors:
        tensors[0].view(-1)[0] = float("nan")
