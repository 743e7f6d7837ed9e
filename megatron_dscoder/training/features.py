"""Which performance features a process runs, from the flags and the kernels it can import.

Each feature of :class:`~megatron_dscoder.config.performance.PerformanceConfig` is decided here
once, with a one-line reason that is logged once per run ("rope fusion: off (Transformer Engine
not importable)"). A switch left at its default turns on wherever its kernel can run. A feature
asked for explicitly that cannot run here (``--tp-comm-overlap`` without Transformer Engine,
``--cross-entropy-loss-fusion`` on CPU) falls back to the plain path with a WARNING instead of
stopping: these switches change speed, never the math, so a launcher written for the cluster still
runs on a CPU box or on an image without TE. Layout mistakes (``--overlap-param-gather`` without
the distributed optimizer) are refused earlier, by the config.

What needs what (megatron-core 0.16.1):

* RoPE fusion: Transformer Engine's fused RoPE (megatron-core refuses the switch without it);
* bias-SwiGLU fusion: megatron-core's ``jit_fuser`` (``torch.compile``); kept off on CPU, where
  compiling needs a C++ toolchain and costs more than it saves;
* gradient-accumulation fusion: apex's ``fused_weight_gradient_mlp_cuda`` for every spec (the
  output layer is megatron-core's own ``ColumnParallelLinear`` even in the TE spec), and TE for
  the TE spec's linears;
* cross-entropy fusion: ``te`` needs Transformer Engine, ``native`` is ``torch.compile``;
* TP communication overlap: the TE spec and TE userbuffers (initialised by
  :func:`initialize_tp_comm_overlap`);
* gradient-reduce / parameter-gather overlap and recompute by module: any backend, gloo included.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field

import torch

from megatron_dscoder.config.run import RunConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernels:
    """What this process can run: a CUDA device, Transformer Engine, apex's wgrad kernel."""

    cuda: bool
    transformer_engine: bool
    """Importable, with a CUDA device, and providing the fused RoPE megatron-core imports."""
    apex_wgrad: bool
    """apex's ``fused_weight_gradient_mlp_cuda`` extension is importable."""
    te_importable: bool = False
    """megatron-core imported Transformer Engine (with or without a GPU)."""

    @classmethod
    def detect(cls) -> Kernels:
        """Probe this process's environment (imports nothing that builds kernels)."""
        cuda = torch.cuda.is_available()
        te = False
        if cuda and importlib.util.find_spec("transformer_engine") is not None:
            from megatron.core.models.common.embeddings import rope_utils

            te = rope_utils.fused_apply_rotary_pos_emb is not None
        apex = cuda and importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None
        from megatron.core.tensor_parallel import random as mcore_random

        return cls(
            cuda=cuda, transformer_engine=te, apex_wgrad=apex, te_importable=mcore_random.HAVE_TE
        )


NO_CUDA = "no CUDA device"
NO_TE = "Transformer Engine not importable"
CPU_DEFAULT = "on by default with CUDA only"


def _missing(*requirements: tuple[object, str]) -> str | None:
    """The reason of the first unmet ``(condition, reason)``, or None when all are met."""
    return next((reason for met, reason in requirements if not met), None)


@dataclass(frozen=True)
class Features:
    """The decided switches, and one line per feature saying why (see :func:`log_features`)."""

    apply_rope_fusion: bool = False
    bias_swiglu_fusion: bool = False
    gradient_accumulation_fusion: bool = False
    cross_entropy_loss_fusion: bool = False
    cross_entropy_fusion_impl: str = "native"
    tp_comm_overlap: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    ddp_bucket_size: int | None = None
    recompute_modules: tuple[str, ...] | None = None
    reasons: tuple[str, ...] = field(default=(), compare=False)
    fallbacks: tuple[str, ...] = field(default=(), compare=False)
    """Features asked for explicitly that run the plain path here (logged as warnings)."""

    def transformer_config_kwargs(self) -> dict[str, object]:
        """Fields of megatron-core's ``TransformerConfig``."""
        kwargs: dict[str, object] = {
            "apply_rope_fusion": self.apply_rope_fusion,
            "bias_activation_fusion": self.bias_swiglu_fusion,
            "gradient_accumulation_fusion": self.gradient_accumulation_fusion,
            "cross_entropy_loss_fusion": self.cross_entropy_loss_fusion,
            "cross_entropy_fusion_impl": self.cross_entropy_fusion_impl,
            "tp_comm_overlap": self.tp_comm_overlap,
        }
        if self.recompute_modules is not None:
            kwargs["recompute_modules"] = list(self.recompute_modules)
        return kwargs

    def ddp_config_kwargs(self) -> dict[str, object]:
        """Fields of megatron-core's ``DistributedDataParallelConfig``."""
        return {
            "overlap_grad_reduce": self.overlap_grad_reduce,
            "overlap_param_gather": self.overlap_param_gather,
            "bucket_size": self.ddp_bucket_size,
        }


def resolve(run: RunConfig, backend: str, kernels: Kernels) -> Features:
    """The switches this process runs for ``run`` with the resolved attention ``backend``
    (``transformer_engine`` means megatron-core's TE layer spec) on ``kernels``."""
    perf = run.performance
    reasons: list[str] = []
    fallbacks: list[str] = []

    def decide(name: str, asked: bool | None, missing: str | None, flag: str) -> bool:
        """``asked``: True/False given, None = default (on where it can run)."""
        if asked is False:
            reasons.append(f"{name}: off ({flag})")
            return False
        if missing is not None:
            reasons.append(f"{name}: off ({missing})")
            if asked:
                fallbacks.append(f"{flag} asked for, but {missing}: {name} stays off")
            return False
        reasons.append(f"{name}: on")
        return True

    te_spec = backend == "transformer_engine"
    cuda, te = kernels.cuda, kernels.transformer_engine
    rope = decide(
        "rope fusion",
        None if perf.apply_rope_fusion else False,
        _missing((cuda, NO_CUDA), (te, NO_TE)),
        "--no-rope-fusion",
    )
    swiglu = decide(
        "bias-swiglu fusion (torch.compile)",
        None if perf.bias_swiglu_fusion else False,
        _missing((cuda, NO_CUDA)),
        "--no-bias-swiglu-fusion",
    )
    wgrad = decide(
        "gradient-accumulation fusion",
        None if perf.gradient_accumulation_fusion else False,
        _missing(
            (cuda, NO_CUDA),
            (kernels.apex_wgrad, "apex's fused_weight_gradient_mlp_cuda not importable"),
            (te or not te_spec, NO_TE),
        ),
        "--no-gradient-accumulation-fusion",
    )
    impl = perf.cross_entropy_fusion_impl or ("te" if te else "native")
    if impl == "te" and not te and cuda:
        fallbacks.append(f"--cross-entropy-fusion-impl te asked for, but {NO_TE}: native")
        impl = "native"
    ce_flag = "--cross-entropy-loss-fusion"
    ce = decide(
        f"cross-entropy fusion ({impl})",
        perf.cross_entropy_loss_fusion,
        _missing((cuda, NO_CUDA)),
        ce_flag if perf.cross_entropy_loss_fusion is not False else "--no" + ce_flag[1:],
    )
    tp_overlap = decide(
        "tp-comm overlap",
        True if perf.tp_comm_overlap else False,
        _missing(
            (cuda, NO_CUDA),
            (te, NO_TE),
            (te_spec, "needs the TE layer spec (--attention-backend transformer_engine)"),
        ),
        "--tp-comm-overlap" if perf.tp_comm_overlap else "default",
    )
    grad_asked = perf.overlap_grad_reduce
    if grad_asked is None and perf.overlap_param_gather:
        grad_asked = True  # Megatron-LM requires both; asking for the gather implies the reduce
    grad = decide(
        "overlap grad reduce",
        grad_asked,
        _missing((cuda or grad_asked, CPU_DEFAULT)),
        "--overlap-grad-reduce" if grad_asked else "--no-overlap-grad-reduce",
    )
    param_asked = perf.overlap_param_gather
    param = decide(
        "overlap param gather",
        param_asked,
        _missing(
            (run.parallel.use_distributed_optimizer, "needs --use-distributed-optimizer"),
            (grad, "needs overlap grad reduce"),
            (cuda or param_asked, CPU_DEFAULT),
        ),
        "--overlap-param-gather" if param_asked else "--no-overlap-param-gather",
    )
    if perf.ddp_bucket_size is not None and not grad:
        reasons.append("ddp-bucket-size: unused (one bucket without overlap grad reduce)")
    modules = perf.recompute_modules
    if modules and "layernorm" in modules and not kernels.te_importable:
        # megatron-core 0.16.1's CheckpointWithoutOutput (layernorm recompute) reads TE's FP8
        # state whatever the precision, and raises NameError without Transformer Engine.
        fallbacks.append(f"--recompute-modules layernorm asked for, but {NO_TE}: not recomputed")
        modules = tuple(m for m in modules if m != "layernorm") or ("core_attn",)
    if run.train.recompute_granularity == "selective":
        reasons.append(f"selective recompute of: {', '.join(modules or ('core_attn',))}")
    return Features(
        apply_rope_fusion=rope,
        bias_swiglu_fusion=swiglu,
        gradient_accumulation_fusion=wgrad,
        cross_entropy_loss_fusion=ce,
        cross_entropy_fusion_impl=impl,
        tp_comm_overlap=tp_overlap,
        overlap_grad_reduce=grad,
        overlap_param_gather=param,
        ddp_bucket_size=perf.ddp_bucket_size,
        recompute_modules=modules,
        reasons=tuple(reasons),
        fallbacks=tuple(fallbacks),
    )


def log_features(features: Features) -> None:
    """One INFO line per feature, one WARNING per explicit request that runs the plain path."""
    for line in features.reasons:
        logger.info("%s", line)
    for line in features.fallbacks:
        logger.warning("%s", line)


def initialize_tp_comm_overlap(run: RunConfig, dtype: torch.dtype) -> None:
    """Allocate Transformer Engine's userbuffers for TP communication overlap (as Megatron-LM
    does before building the model): one [seq x micro-batch / CP, hidden] buffer per TP group."""
    from transformer_engine.pytorch import module as te_module

    t, par = run.train, run.parallel
    shape = [
        t.seq_length * t.micro_batch_size // par.context_parallel_size,  # tokens per CP rank
        run.arch.hidden_size,
    ]
    te_module.base.initialize_ub(
        shape=shape,
        tp_size=par.tensor_model_parallel_size,
        dtype=dtype,
        bootstrap_backend="nccl",
    )
