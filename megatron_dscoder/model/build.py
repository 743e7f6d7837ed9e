"""Build a DeepSeek-Coder ``GPTModel`` from megatron-core blocks.

Two layer specs, one model:

* ``--attention-backend transformer_engine`` (``auto`` with TE on a GPU): megatron-core's TE
  spec (RMSNorm fused into the QKV and fc1 GEMMs, TE's fused attention / FlashAttention);
* otherwise: megatron-core's local spec (its own column/row-parallel linears) with the core
  attention of the backend (``megatron_dscoder.model.attention``: torch SDPA, flash-attn or
  megatron-core's unfused ``DotProductAttention``), RoPE compiled on a GPU
  (``megatron_dscoder.model.fused``) and :class:`RMSNorm`, a norm that marks its weight for
  sequence parallelism so megatron-core all-reduces its gradient over the TP group.

Checkpoint keys are the same for every spec (the local spec maps its norm names onto TE's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import (
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)

from megatron_dscoder.model.attention import (
    core_attention_module,
    have_transformer_engine,
    resolve_backend,
)
from megatron_dscoder.model.fused import LeanSelfAttention
from megatron_dscoder.model.registry import ModelArch

__all__ = ["RMSNorm", "build_model", "have_transformer_engine", "layer_spec", "transformer_config"]


class RMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` with megatron-core's norm constructor and sequence-parallel marking.

    Under sequence parallelism each tensor-parallel rank normalises a different slice of the
    sequence, so the weight's gradient is partial; ``sequence_parallel=True`` on the weight tells
    megatron-core's ``finalize_model_grads`` to all-reduce it over the TP group.
    """

    def __init__(
        self, config: TransformerConfig, hidden_size: int, eps: float = 1e-6, **unused: object
    ) -> None:
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [s, b, h] -> [s, b, h]
        # torch's rms_norm in the activation dtype: on a GPU one fused kernel that accumulates
        # in fp32 and keeps only x and 1/rms for backward; on a CPU it upcasts bf16 internally.
        # No explicit fp32 copies of x or the weight.
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


PLAIN_PATH: dict[str, object] = {
    "apply_rope_fusion": False,
    "bias_activation_fusion": False,
    "gradient_accumulation_fusion": False,
    "cross_entropy_loss_fusion": False,
    "tp_comm_overlap": False,
}
"""megatron-core switches that need CUDA kernels (TE, apex, torch.compile), all off."""


def transformer_config(
    arch: ModelArch,
    *,
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    sequence_parallel: bool = False,
    context_parallel_size: int = 1,
    first_stage_layers: int | None = None,
    last_stage_layers: int | None = None,
    params_dtype: torch.dtype = torch.float32,
    **overrides: object,
) -> TransformerConfig:
    """The megatron-core ``TransformerConfig`` of a registry size and parallel layout.

    Fusions and TP overlap are off (:data:`PLAIN_PATH`, which runs anywhere: conversion,
    evaluation, CPU) unless ``overrides`` sets them; training passes the switches
    ``training/features.py`` decided for this machine.
    """
    bf16 = params_dtype == torch.bfloat16
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.kv_channels,
        layernorm_epsilon=arch.layernorm_epsilon,
        init_method_std=arch.init_method_std,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        # No bias and dropout 0: nothing for these to fuse (masked softmax: `unfused` only).
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        context_parallel_size=context_parallel_size,
        sequence_parallel=sequence_parallel,
        num_layers_in_first_pipeline_stage=first_stage_layers,
        num_layers_in_last_pipeline_stage=last_stage_layers,
        pipeline_dtype=params_dtype,
        params_dtype=params_dtype,
        bf16=bf16,
        # Weights are written by megatron_dscoder.model.weight_init after construction
        # (layout-independent).
        perform_initialization=False,
        use_cpu_initialization=not torch.cuda.is_available(),
        calculate_per_token_loss=True,
        **{**PLAIN_PATH, **overrides},
    )


def layer_spec(
    config: TransformerConfig, attention_backend: str = "auto"
) -> ModuleSpec | TransformerBlockSubmodules:
    """The decoder spec for this process's pipeline stage with ``attention_backend``."""
    backend = resolve_backend(attention_backend)
    if backend == "transformer_engine":
        return get_gpt_layer_with_transformer_engine_spec()
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.module = LeanSelfAttention
    spec.submodules.self_attention.submodules.core_attention = core_attention_module(backend)
    spec.submodules.input_layernorm = RMSNorm
    spec.submodules.pre_mlp_layernorm = RMSNorm
    num_layers = get_num_layers_to_build(config)
    return TransformerBlockSubmodules(layer_specs=[spec] * num_layers, layer_norm=RMSNorm)


def build_model(
    arch: ModelArch, config: TransformerConfig, attention_backend: str = "auto"
) -> GPTModel:
    """One pipeline stage of the model (pre/post-processing only on the first/last stage)."""
    return GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(config, attention_backend),
        vocab_size=arch.padded_vocab_size(config.tensor_model_parallel_size),
        max_sequence_length=arch.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=arch.rotary_base,
        seq_len_interpolation_factor=arch.seq_len_interpolation_factor,
    )
