"""Core-attention backends, chosen by ``--attention-backend``.

megatron-core's own ``DotProductAttention`` (``unfused``) materialises the full ``[b, heads, s, s]``
score and probability matrices, repeats K/V for GQA, and keeps the probabilities for backward:
quadratic memory that rules out the 16K stage on a CPU and costs time everywhere. The
alternatives here are megatron-core core-attention submodules (same constructor and forward as
``DotProductAttention``, so they drop into the local layer spec and megatron-core's
selective-recompute wrapper unchanged) over fused kernels:

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, causal, GQA through
  ``enable_gqa`` (no repeated K/V), on any device torch supports; the kernel torch picks
  (cuDNN, flash, memory-efficient or math) is logged once per device and dtype;
* ``flash``: the flash-attn package's ``flash_attn_func`` (CUDA, bf16/fp16);
* ``transformer_engine``: megatron-core's Transformer Engine spec (TE's fused attention);
* ``auto``: Transformer Engine when it and CUDA are present, else ``sdpa``.

None of them owns parameters, so checkpoint keys are the same for every backend and a run may
switch backend on resume. Inputs are megatron's ``[s, b, heads, d]`` with this rank's
tensor-parallel share of the heads (sequence parallelism has already gathered the sequence).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide

from megatron_dscoder.model.backends import ATTENTION_BACKENDS as BACKENDS
from megatron_dscoder.model.fused import log_sdpa_kernel

_SDPA_GQA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)
"""``enable_gqa`` appeared in torch 2.5; older versions repeat K/V."""


class BackendUnavailableError(ValueError):
    """The requested attention backend cannot run in this environment (names what is missing)."""


def have_transformer_engine() -> bool:
    """True when Transformer Engine is importable and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(name: str) -> str:
    """The concrete backend for ``name`` (``auto`` resolved), or
    :class:`BackendUnavailableError`."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"attention-backend={name!r}: choose one of {BACKENDS}")
    if name == "auto":
        return "transformer_engine" if have_transformer_engine() else "sdpa"
    needs = {"transformer_engine": ("transformer_engine", "Transformer Engine"),
             "flash": ("flash_attn", "flash-attn")}  # fmt: skip
    if name in needs:
        package, label = needs[name]
        missing = [
            what
            for what, ok in (
                (f"the {package} package", importlib.util.find_spec(package) is not None),
                ("a CUDA device", torch.cuda.is_available()),
            )
            if not ok
        ]
        if missing:
            raise BackendUnavailableError(
                f"--attention-backend {name} needs {label} on a GPU; missing here: "
                f"{' and '.join(missing)} (use sdpa)"
            )
    return name


class _FusedCoreAttention(MegatronModule):
    """What a fused backend shares: megatron-core's constructor, head counts, scale, layouts."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: ProcessGroupCollection | None = None,
    ) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("context parallelism needs the transformer_engine attention backend")
        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        if dropout:
            raise ValueError(
                f"attention dropout {dropout} is not supported (DeepSeek-Coder uses 0)"
            )
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.heads = divide(config.num_attention_heads, tp)
        self.groups = divide(config.num_query_groups, tp)
        self.softmax_scale = (
            softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: object | None = None,
    ) -> torch.Tensor:
        """``[s, b, heads, d]`` q and ``[s, b, groups, d]`` k, v -> ``[s, b, heads * d]``."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("packed sequences and attention bias need transformer_engine")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        causal = attention_mask is None and mask_type == AttnMaskType.causal
        out = self._attend(query, key, value, attention_mask, causal)  # [s, b, heads, d]
        return out.reshape(out.shape[0], out.shape[1], -1)

    def _attend(self, q, k, v, mask, causal):
        raise NotImplementedError


class SDPAttention(_FusedCoreAttention):
    """Core attention through ``torch.nn.functional.scaled_dot_product_attention``."""

    def _attend(self, q, k, v, mask, causal):
        # [s, b, h, d] -> [b, h, s, d] (views; the kernels take strided inputs)
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))
        gqa = self.heads != self.groups
        if gqa and not _SDPA_GQA:
            k, v = (t.repeat_interleave(self.heads // self.groups, dim=1) for t in (k, v))
        kwargs = {"enable_gqa": True} if gqa and _SDPA_GQA else {}
        log_sdpa_kernel(q, k, v, causal and mask is None)
        # megatron's masks are True where attention is *not* allowed; SDPA's the opposite.
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if mask is None else ~mask,
            is_causal=causal,
            scale=self.softmax_scale,
            **kwargs,
        )
        return out.permute(2, 0, 1, 3)


class FlashAttention(_FusedCoreAttention):
    """Core attention through flash-attn's ``flash_attn_func`` (native GQA, no mask tensor)."""

    def _attend(self, q, k, v, mask, causal):
        from flash_attn import flash_attn_func

        if mask is not None:
            raise ValueError("the flash backend takes causal or no mask, not a mask tensor")
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [b, s, h, d]
        out = flash_attn_func(q, k, v, 0.0, softmax_scale=self.softmax_scale, causal=causal)
        return out.transpose(0, 1)


def core_attention_module(backend: str) -> type[MegatronModule]:
    """The local spec's core-attention class for a concrete non-TE backend."""
    if backend == "unfused":
        from megatron.core.transformer.dot_product_attention import DotProductAttention

        return DotProductAttention
    return {"sdpa": SDPAttention, "flash": FlashAttention}[backend]
