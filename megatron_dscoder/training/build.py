"""Assemble the trainable pieces: model chunk (initialised layout-independently), DDP, optimizer."""

from __future__ import annotations

import logging

import torch
from megatron.core import parallel_state
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import MegatronOptimizer, OptimizerConfig, get_megatron_optimizer
from megatron.core.transformer import TransformerConfig

from megatron_dscoder.config.run import RunConfig
from megatron_dscoder.model.attention import resolve_backend
from megatron_dscoder.model.build import build_model, transformer_config
from megatron_dscoder.model.weight_init import initialize_model
from megatron_dscoder.parallel import grad_norm


def use_bf16(run: RunConfig) -> bool:
    """The run's precision: ``--bf16``/``--no-bf16`` if given, else bf16 exactly when CUDA is."""
    return torch.cuda.is_available() if run.train.bf16 is None else run.train.bf16


def params_dtype(run: RunConfig) -> torch.dtype:
    """Dtype of the model's weights and activations (the optimizer keeps fp32 main weights)."""
    return torch.bfloat16 if use_bf16(run) else torch.float32


logger = logging.getLogger(__name__)


def build_transformer_config(run: RunConfig) -> TransformerConfig:
    """The run's megatron-core config (bf16 or fp32 weights and activations, see :func:`use_bf16`)."""
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
    )


def build_model_chunks(run: RunConfig, config: TransformerConfig) -> list[DistributedDataParallel]:
    """This rank's model chunk, initialised from ``run.train.seed`` and wrapped in megatron DDP."""
    logger.info("attention backend: %s", resolve_backend(run.train.attention_backend))
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
        overlap_grad_reduce=False,
        use_distributed_optimizer=run.parallel.use_distributed_optimizer,
    )
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    return [ddp]


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
    )
    return get_megatron_optimizer(config, model)
