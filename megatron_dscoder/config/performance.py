"""Megatron-LM's performance features: kernel fusions, communication overlap, selective
recompute by module, manual garbage collection.

The flags keep Megatron-LM's names and senses: the RoPE, bias-SwiGLU and gradient-accumulation
fusions are on unless ``--no-...``; ``--cross-entropy-loss-fusion``, ``--overlap-grad-reduce``
and ``--overlap-param-gather`` also accept ``--no-...``. A switch left at its default (``None``
for the three-state ones) means "on wherever the kernel or the collective can run", decided per
process by :mod:`megatron_dscoder.training.features` from CUDA, Transformer Engine and apex, and
logged once. None of them changes the math: on CPU the ones that can run there (the overlaps over
gloo, recompute by module, manual GC) give the same losses and gradient norms as the plain path.

This module checks only what the flags mean together with the layout (``--overlap-param-gather``
needs the distributed optimizer, ``--tp-comm-overlap`` needs sequence parallelism, ...): those are
mistakes on any machine, refused before launch.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_dscoder.config.flags import ConfigError, opt, require_positive

RECOMPUTE_MODULES = ("core_attn", "mlp", "layernorm")
"""megatron-core's ``recompute_modules`` that exist in a dense model (its MoE and MLA entries
have nothing to recompute in DeepSeek-Coder)."""

CROSS_ENTROPY_IMPLS = ("native", "te")


@dataclass(frozen=True, kw_only=True)
class PerformanceConfig:
    """Speed and memory switches; none of them changes what is computed."""

    apply_rope_fusion: bool = opt(
        True, "unfused RoPE (default: fused with CUDA and Transformer Engine)",
        flag="--no-rope-fusion",
    )  # fmt: skip
    bias_swiglu_fusion: bool = opt(
        True, "unfused SwiGLU (default: megatron-core's torch.compile'd SwiGLU with CUDA)",
        flag="--no-bias-swiglu-fusion",
    )  # fmt: skip
    gradient_accumulation_fusion: bool = opt(
        True, "accumulate weight gradients outside the GEMM (default: fused into the fp32 "
        "gradient buffer with CUDA and apex's fused_weight_gradient_mlp_cuda)",
        flag="--no-gradient-accumulation-fusion",
    )  # fmt: skip
    cross_entropy_loss_fusion: bool | None = opt(
        None, "fused cross-entropy (default: on with CUDA; Transformer Engine's kernel when "
        "importable, else megatron-core's torch.compile'd one)",
    )  # fmt: skip
    cross_entropy_fusion_impl: str | None = opt(
        None, "default: te with Transformer Engine, else native", choices=CROSS_ENTROPY_IMPLS
    )
    overlap_grad_reduce: bool | None = opt(
        None, "reduce gradient buckets during backward (default: on with CUDA)"
    )
    overlap_param_gather: bool | None = opt(
        None, "all-gather updated parameters during the next forward; needs "
        "--use-distributed-optimizer, implies --overlap-grad-reduce (default: on with CUDA and "
        "the distributed optimizer)",
    )  # fmt: skip
    ddp_bucket_size: int | None = opt(
        None, "elements per gradient bucket when overlapping (default: megatron-core's, "
        "max(40M, 1M x data-parallel size))",
    )  # fmt: skip
    tp_comm_overlap: bool = opt(
        False, "overlap tensor-parallel all-gathers/reduce-scatters with GEMMs (Transformer "
        "Engine userbuffers; needs --sequence-parallel)",
    )  # fmt: skip
    recompute_modules: tuple[str, ...] | None = opt(
        None, f"with --recompute-granularity selective, any of {', '.join(RECOMPUTE_MODULES)} "
        "(default: core_attn)",
    )  # fmt: skip
    manual_gc: bool = opt(
        False, "disable Python's automatic GC; collect on every rank at the same points"
    )
    manual_gc_interval: int = opt(
        0, "with --manual-gc: also collect every N iterations (default: 0, only around "
        "evaluation and checkpoints)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        require_positive(self, "ddp_bucket_size")
        require_positive(self, "manual_gc_interval", allow_zero=True)
        for name in ("ddp_bucket_size", "manual_gc_interval"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, int):
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer, got {value!r}")
        impl = self.cross_entropy_fusion_impl
        if impl is not None and impl not in CROSS_ENTROPY_IMPLS:
            raise ConfigError(
                f"--cross-entropy-fusion-impl {impl!r}: choose {', '.join(CROSS_ENTROPY_IMPLS)}"
            )
        if self.recompute_modules is not None:
            modules = tuple(self.recompute_modules)
            object.__setattr__(self, "recompute_modules", modules)
            unknown = sorted(set(modules) - set(RECOMPUTE_MODULES))
            if not modules or unknown or len(set(modules)) != len(modules):
                raise ConfigError(
                    f"--recompute-modules {' '.join(modules) or '(none)'}: give distinct "
                    f"modules among {', '.join(RECOMPUTE_MODULES)}"
                )
        if self.manual_gc_interval and not self.manual_gc:
            raise ConfigError("--manual-gc-interval needs --manual-gc")
        if self.overlap_param_gather and self.overlap_grad_reduce is False:
            raise ConfigError(
                "--overlap-param-gather needs --overlap-grad-reduce (got --no-overlap-grad-reduce)"
            )

    def check_layout(
        self,
        *,
        tensor_model_parallel_size: int,
        sequence_parallel: bool,
        use_distributed_optimizer: bool,
        recompute_granularity: str | None,
    ) -> None:
        """Raise :class:`ConfigError` for a switch the parallel layout or recompute mode
        rules out."""
        if self.overlap_param_gather and not use_distributed_optimizer:
            raise ConfigError("--overlap-param-gather needs --use-distributed-optimizer")
        if self.tp_comm_overlap and (tensor_model_parallel_size < 2 or not sequence_parallel):
            raise ConfigError(
                "--tp-comm-overlap needs tensor-model-parallel-size > 1 and --sequence-parallel "
                f"(got tensor-model-parallel-size={tensor_model_parallel_size}, "
                f"sequence-parallel={sequence_parallel})"
            )
        if self.recompute_modules is not None and recompute_granularity != "selective":
            raise ConfigError(
                "--recompute-modules needs --recompute-granularity selective "
                f"(got {recompute_granularity})"
            )
