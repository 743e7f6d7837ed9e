"""Assemble the trainable pieces: model chunk (initialised layout-independently), DDP, optimizer."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from megatron.core import parallel_state
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import MegatronOptimizer, OptimizerConfig, get_megatron_optimizer
from megatron.core.transformer import TransformerConfig

from megatron_dscoder.config.run import ConfigError, RunConfig
from megatron_dscoder.model.attention import resolve_backend
from megatron_dscoder.model.build import build_model, transformer_config
from megatron_dscoder.model.weight_init import initialize_model
from megatron_dscoder.parallel import grad_norm
from megatron_dscoder.training.features import (
    Features,
    Kernels,
    initialize_tp_comm_overlap,
    log_features,
    resolve,
)


def use_bf16(run: RunConfig) -> bool:
    """The run's precision: ``--bf16``/``--no-bf16`` if given, else bf16 exactly when CUDA is."""
    return torch.cuda.is_available() if run.train.bf16 is None else run.train.bf16


def params_dtype(run: RunConfig) -> torch.dtype:
    """Dtype of the model's weights and activations (the optimizer keeps fp32 main weights)."""
    return torch.bfloat16 if use_bf16(run) else torch.float32


logger = logging.getLogger(__name__)


def run_features(run: RunConfig, kernels: Kernels | None = None) -> Features:
    """The performance switches this process runs (``training/features.py``) with ``kernels``
    (default: what this process detects)."""
    backend = resolve_backend(run.train.attention_backend)
    return resolve(run, backend, kernels or Kernels.detect())


def build_transformer_config(run: RunConfig, kernels: Kernels | None = None) -> TransformerConfig:
    """The run's megatron-core config (bf16 or fp32 weights and activations, see :func:`use_bf16`),
    with the fusions and recompute modules of :func:`run_features`."""
    first, last = run.pipeline_layers
    par = run.parallel
    return transformer_config(
        run.arch,
        tensor_model_parallel_size=par.tensor_model_parallel_size,
        pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        sequence_parallel=par.sequence_parallel,
        context_parallel_size=par.context_parallel_size,
        first_stage_layers=first,
        last_stage_layers=last,
        params_dtype=params_dtype(run),
        recompute_granularity=run.train.recompute_granularity,
        recompute_method=run.train.recompute_method,
        recompute_num_layers=(
            run.train.recompute_num_layers or 1
            if run.train.recompute_granularity == "full"
            else None
        ),
        **run_features(run, kernels).transformer_config_kwargs(),
    )


def build_model_chunks(run: RunConfig, config: TransformerConfig) -> list[DistributedDataParallel]:
    """This rank's model chunk, initialised from ``run.train.seed`` and wrapped in megatron DDP."""
    logger.info("attention backend: %s", resolve_backend(run.train.attention_backend))
    features = run_features(run)
    log_features(features)
    if features.tp_comm_overlap:
        initialize_tp_comm_overlap(run, params_dtype(run))
    model = build_model(run.arch, config, run.train.attention_backend)
    initialize_model(
        model,
        run.train.seed,
        init_method_std=run.arch.init_method_std,
        num_layers=run.arch.num_layers,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        tp_size=parallel_state.get_tensor_model_parallel_world_size(),
    )
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        use_distributed_optimizer=run.parallel.use_distributed_optimizer,
        **{**features.ddp_config_kwargs(), "bucket_size": bucket_size(run, features)},
    )
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    return [ddp]


ONE_BUCKET = 1 << 62
"""A ``bucket_size`` above any model: all gradients in one bucket."""


def bucket_size(run: RunConfig, features: Features) -> int | None:
    """The DDP bucket size: ``--ddp-bucket-size``, megatron-core's default (None), or one bucket
    when the distributed optimizer saves in the ``fully_reshardable`` format
    (``--ckpt-fully-reshardable``; routine saves are ``dp_reshardable``, which is right for any
    number of buckets).

    megatron-core 0.16.1 writes that format wrongly for more than one bucket: it packs the
    buckets' optimizer state without the padding between buckets, then slices it with the padded
    parameter offsets, so every parameter after the first bucket gets another one's state (a
    resumed DP=2 debug run departs from the uninterrupted one at its first iteration). Several
    buckets exist only with overlapped gradient reduction.
    """
    if not (
        features.overlap_grad_reduce
        and run.parallel.use_distributed_optimizer
        and run.checkpoint.save
        and run.checkpoint.ckpt_fully_reshardable
    ):
        return features.ddp_bucket_size
    if features.ddp_bucket_size is not None:
        raise ConfigError(
            f"--ddp-bucket-size {features.ddp_bucket_size} with --use-distributed-optimizer and "
            "--save --ckpt-fully-reshardable: that optimizer checkpoint format of megatron-core "
            "0.16.1 is wrong for more than one bucket; leave --ddp-bucket-size out (one bucket) "
            "or save without --ckpt-fully-reshardable"
        )
    logger.warning(
        "overlap grad reduce: one gradient bucket (megatron-core 0.16.1's fully_reshardable "
        "optimizer checkpoint is wrong for several)"
    )
    return ONE_BUCKET


@contextlib.contextmanager
def params_synced(model: list[DistributedDataParallel]) -> Iterator[None]:
    """Up-to-date parameters inside the block, as Megatron-LM has around evaluation and saves.

    With ``--overlap-param-gather`` the optimizer step updates only this rank's shard; the other
    shards arrive by all-gathers that forward pre-hooks start in the next forward. A checkpoint
    written in between would hold stale weights, so the hooks are removed (forcing the gather)
    and put back afterwards.
    """
    hooked = [chunk for chunk in model if getattr(chunk, "use_forward_hook", False)]
    for chunk in hooked:
        chunk.disable_forward_pre_hook(param_sync=True)
    try:
        yield
    finally:
        for chunk in hooked:
            chunk.enable_forward_pre_hook()


def build_optimizer(run: RunConfig, model: list[DistributedDataParallel]) -> MegatronOptimizer:
    """AdamW through megatron-core (TE/apex fused Adam on GPU, torch AdamW on CPU).

    With bf16, megatron-core's mixed-precision optimizer keeps fp32 main weights (sharded over
    data parallelism by the distributed optimizer) and steps them from the fp32 gradient buffer.
    The gradient norm for clipping is accumulated in float64 unless apex/TE provide a kernel.
    """
    train = run.train
    grad_norm.install()
    config = OptimizerConfig(
        optimizer="adam",
        lr=train.lr,  # the schedule sets each iteration's value
        min_lr=train.min_lr,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_eps=train.adam_eps,
        clip_grad=train.clip_grad,
        bf16=use_bf16(run),
        params_dtype=params_dtype(run),
        use_distributed_optimizer=run.parallel.use_distributed_optimizer,
        overlap_param_gather=run_features(run).overlap_param_gather,  # as the DDP config's
    )
    return get_megatron_optimizer(config, model)
