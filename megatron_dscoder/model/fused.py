"""RoPE as one compiled kernel on the local (TE-less) spec, and the SDPA kernel named in the log.

megatron-core applies RoPE with about a dozen element-wise ops per tensor
(``rope_utils._apply_rotary_pos_emb_bshd``: cos, sin, casts, chunk, neg, cat, two muls, an add)
and can fuse it only through Transformer Engine (``apply_rope_fusion``). Without TE,
:class:`LeanSelfAttention` applies the same rotation through ``torch.compile`` on a GPU: one
kernel forward and one backward per tensor, and no cos/sin copies kept for backward. On a CPU
(and wherever compiling is unavailable) it is megatron-core's ``SelfAttention`` unchanged.
SwiGLU's fusion is megatron-core's own ``bias_activation_fusion`` (``bias_swiglu_impl``, compiled
by megatron-core's ``jit_fuser``), so it needs nothing here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from megatron.core.transformer.attention import SelfAttention

logger = logging.getLogger(__name__)


def rope(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``[s, b, heads, d]`` rotated by ``[s, 1, 1, d_rot]`` fp32 angles (non-interleaved halves,
    the first ``d_rot`` channels): the arithmetic of megatron-core's unfused path."""
    rot = freqs.shape[-1]
    cos, sin = torch.cos(freqs).to(t.dtype), torch.sin(freqs).to(t.dtype)
    x, rest = t[..., :rot], t[..., rot:]
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat((x * cos + torch.cat((-x2, x1), dim=-1) * sin, rest), dim=-1)


@functools.cache
def compiled_rope() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """:func:`rope` through ``torch.compile`` (compiled on first call, once per shape)."""
    return torch.compile(rope, fullgraph=True, dynamic=False)


def rope_compiled() -> bool:
    """Whether the local spec applies RoPE compiled: on a GPU, with ``torch.compile``."""
    return torch.cuda.is_available() and hasattr(torch, "compile")


class LeanSelfAttention(SelfAttention):
    """megatron-core's ``SelfAttention`` with RoPE applied by :func:`compiled_rope` (GPU).

    The rotation happens where megatron-core would do it (after the QKV split, before core
    attention and its selective-recompute checkpoint), so the math and the checkpoint keys are
    megatron-core's; megatron-core's own RoPE step then sees no embedding. Inference, packed
    sequences, interleaved or multi-latent RoPE and TE's fused RoPE take megatron-core's path.
    ``rope_fn`` None (a CPU) means megatron-core's path always.
    """

    rope_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._pending_rope: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.rope_fn is None and rope_compiled():
            self.rope_fn = compiled_rope()

    def _rope_here(self, rotary_pos_emb: object, kwargs: dict) -> bool:
        c = self.config
        return (
            self.rope_fn is not None
            and rotary_pos_emb is not None
            and all(kwargs.get(k) is None for k in ("inference_context", "inference_params"))
            and kwargs.get("packed_seq_params") is None
            and not (c.apply_rope_fusion or c.rotary_interleaved or c.multi_latent_attention)
            and not c.no_rope_freq
            and not c.attention_output_gate
        )

    def forward(self, hidden_states, attention_mask, *args, rotary_pos_emb=None, **kwargs):
        """megatron-core's forward; RoPE is applied in :meth:`get_query_key_value_tensors`."""
        if not self._rope_here(rotary_pos_emb, kwargs):
            return super().forward(
                hidden_states, attention_mask, *args, rotary_pos_emb=rotary_pos_emb, **kwargs
            )
        if not isinstance(rotary_pos_emb, tuple):
            rotary_pos_emb = (rotary_pos_emb, rotary_pos_emb)
        self._pending_rope = rotary_pos_emb
        try:
            return super().forward(hidden_states, attention_mask, *args, **kwargs)
        finally:
            self._pending_rope = None

    def get_query_key_value_tensors(self, *args, **kwargs):
        """The split q, k, v, with q and k rotated when this forward applies RoPE."""
        out = super().get_query_key_value_tensors(*args, **kwargs)
        if self._pending_rope is None:
            return out
        query, key, value = out  # [s, b, heads, d], [s, b, groups, d] x 2
        q_freqs, k_freqs = self._pending_rope
        return self.rope_fn(query, q_freqs), self.rope_fn(key, k_freqs), value


_SDPA_LOGGED: set[tuple] = set()


def log_sdpa_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    """Log once per device/dtype which SDPA kernels are enabled and which one torch picks."""
    key = (q.device.type, q.dtype, causal)
    if key in _SDPA_LOGGED:
        return
    _SDPA_LOGGED.add(key)
    enabled = "n/a on CPU"
    if q.is_cuda:
        b = torch.backends.cuda
        flags = {
            "cudnn": b.cudnn_sdp_enabled(),
            "flash": b.flash_sdp_enabled(),
            "mem_efficient": b.mem_efficient_sdp_enabled(),
            "math": b.math_sdp_enabled(),
        }
        enabled = ", ".join(name for name, on in flags.items() if on) or "none"
    try:
        from torch.nn.attention import SDPBackend

        gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
        choice = SDPBackend(torch._fused_sdp_choice(q, k, v, is_causal=causal, **gqa)).name
    except (AttributeError, RuntimeError, TypeError, ValueError) as err:  # private API
        choice = f"unknown ({type(err).__name__})"
    logger.info(
        "SDPA on %s %s: kernel %s (enabled: %s)",
        q.device.type,
        str(q.dtype).removeprefix("torch."),
        choice,
        enabled,
    )
