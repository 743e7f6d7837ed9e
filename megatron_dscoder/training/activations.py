"""What one decoder layer keeps for backward, per token, for each way megatron-core can build it.

The figures are the unique storages autograd holds after a layer's forward (a view keeps its
whole base alive, so a ``value`` sliced out of the fused QKV output costs the whole QKV output).
``benchmarks/bench_activations.py`` measures them with ``saved_tensors_hooks`` and prints them
beside :func:`layer_bytes`; a test holds the two within 10 % on CPU. Per token of one
micro-batch, per tensor-parallel rank, ``e`` the activation dtype's bytes (2 bf16, 4 fp32),
``hq``/``hk`` this rank's query/key widths (heads x d), ``f`` its SwiGLU width:

* RMSNorm (x2): torch's fused kernel (CUDA) and TE's LayerNormLinear keep the input, the fp32
  1/rms and the normalised output (the next GEMM's input): ``2e h + 4``. Where torch decomposes
  ``rms_norm`` (CPU) it keeps an fp32 input and an fp32 normalised copy: ``8h + 4 + e h``.
* RoPE, unfused (megatron-core's ``_apply_rotary_pos_emb_bshd``): cos and sin in the activation
  dtype for q and for k, ``[s, 1, 1, d]`` each: ``4 d e / b``; none when fused.
* Attention: post-RoPE q and k ``e (hq + hk)``; the QKV output, kept whole by the ``value`` view,
  ``e (hq + 2 hk)``; the output ``e hq``, twice when the kernel returns ``[b, s, heads, d]``
  (CUDA flash / memory-efficient SDPA, flash-attn) and ``b > 1``, since the ``[s, b, h]`` GEMM
  input is then a copy. Fused kernels add fp32 softmax statistics, ``4 heads``; the unfused
  ``DotProductAttention`` keeps probabilities ``e heads s``, an fp32 softmax output
  ``4 heads s`` when ``e < 4``, and its boolean ``[s, s]`` causal mask, ``s / b``.
* SwiGLU, unfused: fc1 output ``2f e`` (a view of it feeds silu), ``x_linear + 0.0``, silu's
  output and the product (fc2's input), ``f e`` each: ``5f e``. Fused
  (megatron-core's ``bias_swiglu_impl``): fc1 output and fc2 input, ``3f e``.

Selective recompute (megatron-core's ``recompute_modules``): ``core_attn`` keeps only the
checkpoint's inputs (q, k, the QKV output) and its output; ``mlp`` keeps only the MLP input (the
norm's output, already counted); ``layernorm`` keeps only each norm's input (local spec; TE fuses
its norms into GEMMs, where megatron-core does not recompute them). Full recompute keeps each
checkpointed chunk's input, ``e h``, and replays one chunk's activations in backward.

Under sequence parallelism the norms and the layer input hold ``s / TP`` tokens, so those terms
are divided by TP; the attention and MLP terms are per-rank head / FFN shards already. What runs
only on a GPU (TE, flash-attn, CUDA SDPA kernels, the fused ``rms_norm``) is modelled from the
megatron-core 0.16.1, torch and TE sources and checked by the GPU script, not on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_dscoder.model.registry import ModelArch

FUSED_KERNEL_BACKENDS = ("sdpa", "flash", "transformer_engine")
RECOMPUTE_MODULES = ("core_attn", "mlp", "layernorm")


@dataclass(frozen=True)
class LayerImpl:
    """How a decoder layer is built and run: everything that changes what it saves."""

    backend: str = "sdpa"
    """Concrete attention backend: sdpa, flash, unfused or transformer_engine."""
    bytes_per_element: int = 2
    norm_fused: bool = True
    """TE's norm, or torch's fused ``rms_norm`` (CUDA); False where torch decomposes it (CPU)."""
    swiglu_fused: bool = False
    rope_fused: bool = False
    attention_output_copy: bool = False
    """The kernel's output is ``[b, s, heads, d]`` in memory (CUDA flash / efficient SDPA)."""
    recompute_granularity: str | None = None
    recompute_modules: tuple[str, ...] = ("core_attn",)
    recompute_method: str | None = None
    recompute_num_layers: int = 1
    sequence_parallel: bool = False
    tensor_parallel: int = 1

    def __post_init__(self) -> None:
        if self.backend not in ("sdpa", "flash", "unfused", "transformer_engine"):
            raise ValueError(f"backend={self.backend!r} is not a concrete attention backend")
        if self.bytes_per_element not in (2, 4):
            raise ValueError(f"bytes_per_element={self.bytes_per_element}: 2 (bf16) or 4 (fp32)")
        unknown = set(self.recompute_modules) - set(RECOMPUTE_MODULES)
        if unknown:
            raise ValueError(
                f"recompute_modules {sorted(unknown)}: modelled are {RECOMPUTE_MODULES}"
            )
        if self.recompute_num_layers < 1 or self.tensor_parallel < 1:
            raise ValueError("recompute_num_layers and tensor_parallel must be >= 1")


def layer_bytes(
    arch: ModelArch, impl: LayerImpl, seq_length: int, micro_batch_size: int
) -> dict[str, float]:
    """Bytes per token one layer keeps (not recomputed at full granularity), by part."""
    e, tp, b = impl.bytes_per_element, impl.tensor_parallel, micro_batch_size
    h, d = arch.hidden_size, arch.kv_channels
    heads, groups = arch.num_attention_heads // tp, max(arch.num_query_groups // tp, 1)
    hq, hk, f = heads * d, groups * d, arch.ffn_hidden_size / tp
    selective = impl.recompute_granularity == "selective"
    modules = set(impl.recompute_modules) if selective else set()
    seq_shard = tp if impl.sequence_parallel else 1

    if "layernorm" in modules and impl.backend != "transformer_engine":
        norm = e * h
    elif impl.norm_fused:
        norm = 2 * e * h + 4
    else:
        norm = 8 * h + 4 + e * h
    parts = {"norms": 2 * norm / seq_shard}
    parts["rope cos/sin"] = 0.0 if impl.rope_fused else 4 * d * e / b
    parts["q, k after RoPE"] = e * (hq + hk)
    parts["QKV output"] = e * (hq + 2 * hk)
    copies = 2 if impl.attention_output_copy and b > 1 and "core_attn" not in modules else 1
    parts["attention output"] = copies * e * hq
    if "core_attn" in modules:
        parts["softmax"] = 0.0
    elif impl.backend == "unfused":  # probabilities (+ fp32 softmax output), the [s, s] mask
        parts["softmax"] = heads * seq_length * (e + (4 if e < 4 else 0)) + seq_length / b
    else:
        parts["softmax"] = 4.0 * heads
    parts["mlp"] = 0.0 if "mlp" in modules else (3 if impl.swiglu_fused else 5) * f * e
    return parts


def checkpointed_layer_bytes(arch: ModelArch, impl: LayerImpl) -> float:
    """Bytes per token a fully recomputed chunk keeps: its input."""
    return (
        impl.bytes_per_element
        * arch.hidden_size
        / (impl.tensor_parallel if impl.sequence_parallel else 1)
    )


def stage_bytes(
    arch: ModelArch, impl: LayerImpl, num_layers: int, seq_length: int, micro_batch_size: int
) -> float:
    """Peak bytes per token ``num_layers`` layers hold for one micro-batch.

    Full recompute, ``uniform``: one input per chunk of ``recompute_num_layers`` plus one chunk
    replayed in backward; ``block``: the first ``recompute_num_layers`` layers keep their input,
    the others everything (at least one layer's worth is live while a checkpoint replays).
    """
    layer = sum(layer_bytes(arch, impl, seq_length, micro_batch_size).values())
    if impl.recompute_granularity != "full" or num_layers == 0:
        return num_layers * layer
    n = min(impl.recompute_num_layers, num_layers)
    kept = checkpointed_layer_bytes(arch, impl)
    if impl.recompute_method == "block":
        return n * kept + max(num_layers - n, 1) * layer
    return math.ceil(num_layers / n) * kept + n * layer


def _torch_version() -> tuple[int, int]:
    import torch

    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def layer_impl(config, backend: str, cuda: bool) -> LayerImpl:
    """The :class:`LayerImpl` of a megatron-core ``TransformerConfig`` run with ``backend`` on
    a GPU (``cuda``) or a CPU. On a GPU torch's ``rms_norm`` is one fused kernel (the CUDA
    ``_fused_rms_norm`` of torch >= 2.8; earlier torch decomposes it as on a CPU), and the
    flash / memory-efficient SDPA kernels and flash-attn return ``[b, s, heads, d]``; on a CPU
    ``rms_norm`` decomposes and SDPA's output keeps q's layout.
    The local spec compiles RoPE on a GPU (``model/fused.py``); TE's RoPE is fused only with
    ``apply_rope_fusion``."""
    te = backend == "transformer_engine"
    return LayerImpl(
        backend=backend,
        bytes_per_element=2 if config.bf16 else 4,
        norm_fused=te or (cuda and _torch_version() >= (2, 8)),
        swiglu_fused=bool(config.bias_activation_fusion),
        rope_fused=bool(config.apply_rope_fusion) or (not te and cuda),  # fused.py
        attention_output_copy=cuda and backend in ("sdpa", "flash"),
        recompute_granularity=config.recompute_granularity,
        # megatron-core's MoE / MLA modules do not occur in a dense decoder layer
        recompute_modules=tuple(
            m for m in config.recompute_modules or ("core_attn",) if m in RECOMPUTE_MODULES
        ),
        recompute_method=config.recompute_method,
        recompute_num_layers=config.recompute_num_layers or 1,
        sequence_parallel=config.sequence_parallel,
        tensor_parallel=config.tensor_model_parallel_size,
    )
