"""An accurate gradient norm for megatron-core when neither apex nor Transformer Engine
is installed.

megatron-core clips gradients by the global L2 norm, computed by a fused multi-tensor kernel from
apex or Transformer Engine. Without either it falls back to ``local_multi_tensor_l2_norm``, which
takes ``torch.norm`` of each fp32 gradient. On CPU that norm accumulates in fp32 with few partial
sums and is off by up to ~3e-5 relative for a 32,128 x 64 output-layer gradient (1.1e-5 for a
TP=2 shard of it), so the reported norm — and through clipping the update — depended on the
tensor-parallel layout. The fallback also moves every per-tensor norm to the host (one device
synchronisation per parameter).

:func:`l2_norm` replaces it: each tensor's sum of squares accumulates in float64 (in bounded
chunks, so no float64 copy of a whole tensor is made), per-tensor sums stay on the device and are
added in float64, and only the final norm is rounded to fp32 (the fused kernels' contract). The
result is within fp32 rounding (~1e-7) of the exact norm for any layout.

:func:`install` puts it in place of the fallback on CPU and on GPU alike: there fp32 reductions
are tree-shaped and already accurate to ~1e-7, but the fallback's per-parameter host
synchronisations remain, and one implementation means CI tests exactly what a GPU run without
apex/TE executes. A fused apex/TE kernel, when present, is left untouched (fp32 blockwise
accumulation, ~1e-7, and faster).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 22
"""Elements converted to float64 at a time (a 32 MiB temporary)."""


def sum_of_squares(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of the squared elements, accumulated in float64 (a 0-d float64 tensor, same device)."""
    flat = tensor.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for chunk in flat.split(CHUNK_ELEMENTS):
        wide = chunk.to(torch.float64)
        total += torch.dot(wide, wide)
    return total


def l2_norm(
    chunk_size: int,
    noop_flag: torch.Tensor,
    tensor_lists: list[list[torch.Tensor]],
    per_tensor: bool,
    *args: object,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop-in for ``amp_C.multi_tensor_l2norm``: (global norm as a 1-element fp32 tensor,
    per-tensor norms when ``per_tensor``)."""
    tensors = tensor_lists[0]
    if not tensors:
        return torch.zeros(1, dtype=torch.float32, device=noop_flag.device), None
    squares = torch.stack([sum_of_squares(t) for t in tensors])
    norm = squares.sum().sqrt().to(torch.float32).reshape(1)
    return norm, (squares.sqrt().to(torch.float32) if per_tensor else None)


def install() -> bool:
    """Use :func:`l2_norm` for megatron-core's gradient clipping if it fell back to its local
    implementation; returns whether :func:`l2_norm` is in use. Idempotent."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_l2_norm

    if clip_grads.l2_norm_impl is l2_norm:
        return True
    if clip_grads.l2_norm_impl is not local_multi_tensor_l2_norm:
        return False  # apex's or Transformer Engine's fused kernel
    clip_grads.l2_norm_impl = l2_norm
    logger.info("gradient norm: float64 accumulation (no apex or Transformer Engine kernel)")
    return True
