"""Megatron-LM's performance switches reach megatron-core's own config objects.

The features that need CUDA kernels (Transformer Engine, apex, ``torch.compile``) cannot run
here, so these tests decide them for a described machine (:class:`Kernels` is a plain value, the
one :func:`Kernels.detect` returns on a GPU node) and build megatron-core's real
``TransformerConfig``, ``DistributedDataParallelConfig`` and ``OptimizerConfig`` from the
decision. The features that do run on CPU are compared with the plain path in
``tests/parallel/test_parity.py``.
"""

from __future__ import annotations

import gc
import logging

import pytest
from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig

from megatron_dscoder.config.cli import build_parser, config_from_args
from megatron_dscoder.config.run import ConfigError
from megatron_dscoder.model.build import transformer_config
from megatron_dscoder.runtime.manual_gc import ManualGC
from megatron_dscoder.training.build import ONE_BUCKET, bucket_size, build_transformer_config
from megatron_dscoder.training.features import Kernels, log_features, resolve

CPU = Kernels(cuda=False, transformer_engine=False, apex_wgrad=False)
GPU_TE_APEX = Kernels(cuda=True, transformer_engine=True, apex_wgrad=True, te_importable=True)
GPU_BARE = Kernels(cuda=True, transformer_engine=False, apex_wgrad=False)


def make(flags: str = "", world_size: int = 1):
    argv = f"--model debug --mock-data --seq-length 64 --global-batch-size 8 {flags}".split()
    return config_from_args(build_parser().parse_args(argv), world_size)


def test_cpu_runs_the_plain_path_and_says_why(caplog):
    features = resolve(make(), "sdpa", CPU)
    assert not any(
        (
            features.apply_rope_fusion,
            features.bias_swiglu_fusion,
            features.gradient_accumulation_fusion,
            features.cross_entropy_loss_fusion,
            features.tp_comm_overlap,
            features.overlap_grad_reduce,
            features.overlap_param_gather,
        )
    )
    with caplog.at_level(logging.INFO):
        log_features(features)
    assert "rope fusion: off (no CUDA device)" in caplog.messages
    assert "overlap grad reduce: off (on by default with CUDA only)" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_explicit_request_that_cannot_run_is_a_logged_fallback(caplog):
    run = make("--cross-entropy-loss-fusion --recompute-granularity selective "
               "--recompute-modules layernorm mlp")  # fmt: skip
    features = resolve(run, "sdpa", CPU)
    assert not features.cross_entropy_loss_fusion
    assert features.recompute_modules == ("mlp",)  # layernorm recompute needs TE importable
    with caplog.at_level(logging.INFO):
        log_features(features)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "--cross-entropy-loss-fusion asked for, but no CUDA device: "
        "cross-entropy fusion (native) stays off",
        "--recompute-modules layernorm asked for, but Transformer Engine not importable: "
        "not recomputed",
    ]


def test_cpu_overlap_flags_run_over_gloo():
    features = resolve(make("--use-distributed-optimizer --overlap-param-gather"), "sdpa", CPU)
    assert features.overlap_param_gather and features.overlap_grad_reduce  # the gather implies it


def test_gpu_defaults_reach_megatron_core_configs():
    run = make(
        "--tensor-model-parallel-size 2 --sequence-parallel --use-distributed-optimizer "
        "--tp-comm-overlap --ddp-bucket-size 1000000 --recompute-granularity selective "
        "--recompute-modules mlp layernorm",
        world_size=4,
    )
    features = resolve(run, "transformer_engine", GPU_TE_APEX)
    kwargs = features.transformer_config_kwargs()
    assert kwargs.pop("apply_rope_fusion") is True
    # TE's fused RoPE is what megatron-core checks for when the switch reaches it:
    with pytest.raises(ValueError, match="apply_rope_fusion is not available"):
        transformer_config(run.arch, apply_rope_fusion=True)
    config = transformer_config(
        run.arch,
        tensor_model_parallel_size=2,
        sequence_parallel=True,
        recompute_granularity="selective",
        **kwargs,
    )
    assert config.bias_activation_fusion and config.gradient_accumulation_fusion
    assert config.cross_entropy_loss_fusion and config.cross_entropy_fusion_impl == "te"
    assert config.tp_comm_overlap
    assert config.recompute_modules == ["mlp", "layernorm"]
    ddp = DistributedDataParallelConfig(
        use_distributed_optimizer=True, **features.ddp_config_kwargs()
    )
    assert ddp.overlap_grad_reduce and ddp.overlap_param_gather and ddp.bucket_size == 1000000
    optimizer = OptimizerConfig(overlap_param_gather=features.overlap_param_gather, lr=1e-4)
    assert optimizer.overlap_param_gather


def test_build_transformer_config_passes_the_decision():
    flags = "--recompute-granularity selective --recompute-modules mlp"
    with pytest.raises(ValueError, match="apply_rope_fusion is not available"):
        build_transformer_config(make(flags), GPU_TE_APEX)  # on: reaches megatron-core's check
    config = build_transformer_config(make(f"{flags} --no-rope-fusion"), GPU_TE_APEX)
    assert not config.apply_rope_fusion
    assert config.bias_activation_fusion and config.gradient_accumulation_fusion
    assert config.recompute_granularity == "selective" and config.recompute_modules == ["mlp"]
    off = "--no-bias-swiglu-fusion --no-gradient-accumulation-fusion --no-cross-entropy-loss-fusion"
    config = build_transformer_config(make(f"--no-rope-fusion {off}"), GPU_TE_APEX)
    assert not (config.bias_activation_fusion or config.gradient_accumulation_fusion)
    assert not config.cross_entropy_loss_fusion
    config = build_transformer_config(make(), CPU)
    assert not (config.apply_rope_fusion or config.bias_activation_fusion)
    assert config.recompute_modules == ["core_attn"]  # megatron-core's default, unused


@pytest.mark.parametrize(
    ("kernels", "backend", "reason"),
    [
        (GPU_BARE, "sdpa", "apex's fused_weight_gradient_mlp_cuda not importable"),
        (Kernels(cuda=True, transformer_engine=False, apex_wgrad=True), "sdpa", None),
        (GPU_TE_APEX, "transformer_engine", None),
    ],
)
def test_gradient_accumulation_fusion_needs_apex_for_every_spec(kernels, backend, reason):
    features = resolve(make(), backend, kernels)
    assert features.gradient_accumulation_fusion is (reason is None)
    if reason:
        assert f"gradient-accumulation fusion: off ({reason})" in features.reasons


def test_gpu_without_te_uses_the_native_cross_entropy_and_no_tp_overlap():
    run = make("--tensor-model-parallel-size 2 --sequence-parallel --tp-comm-overlap", 2)
    features = resolve(run, "sdpa", GPU_BARE)
    assert features.cross_entropy_loss_fusion and features.cross_entropy_fusion_impl == "native"
    assert features.bias_swiglu_fusion and not features.apply_rope_fusion
    assert not features.tp_comm_overlap
    assert features.fallbacks == (
        "--tp-comm-overlap asked for, but Transformer Engine not importable: "
        "tp-comm overlap stays off",
    )
    te_features = resolve(run, "sdpa", GPU_TE_APEX)  # TE importable, but the local spec
    assert not te_features.tp_comm_overlap
    assert "needs the TE layer spec" in te_features.fallbacks[0]


def test_overlaps_default_on_with_cuda_and_the_distributed_optimizer():
    features = resolve(make("--use-distributed-optimizer", 2), "sdpa", GPU_BARE)
    assert features.overlap_grad_reduce and features.overlap_param_gather
    features = resolve(make("", 2), "sdpa", GPU_BARE)
    assert features.overlap_grad_reduce and not features.overlap_param_gather
    off = "--use-distributed-optimizer --no-overlap-grad-reduce --no-overlap-param-gather"
    features = resolve(make(off, 2), "sdpa", GPU_BARE)
    assert not (features.overlap_grad_reduce or features.overlap_param_gather)


def test_several_buckets_are_refused_for_fully_reshardable_saves(tmp_path):
    routine = f"--use-distributed-optimizer --overlap-grad-reduce --save {tmp_path}"
    run = make(f"{routine} --ddp-bucket-size 1000", 2)
    assert bucket_size(run, resolve(run, "sdpa", CPU)) == 1000  # dp_reshardable: any buckets
    save = f"{routine} --ckpt-fully-reshardable"
    run = make(save, 2)
    assert bucket_size(run, resolve(run, "sdpa", CPU)) == ONE_BUCKET
    run = make(f"{save} --ddp-bucket-size 1000", 2)
    with pytest.raises(ConfigError, match="--ddp-bucket-size 1000 with --use-distributed-opt"):
        bucket_size(run, resolve(run, "sdpa", CPU))
    run = make("--use-distributed-optimizer --overlap-grad-reduce --ddp-bucket-size 1000", 2)
    assert bucket_size(run, resolve(run, "sdpa", CPU)) == 1000  # no saves: any size


def test_manual_gc_collects_only_where_asked():
    collections = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 2:
            collections.append(1)

    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        with ManualGC(enabled=True, interval=3) as manual:
            assert not gc.isenabled() and len(collections) == 1  # one at the start
            for iteration in range(1, 8):
                manual.step(iteration)
            assert len(collections) == 3  # iterations 3 and 6
            manual.collect()
            assert len(collections) == 4
        assert gc.isenabled()
        with ManualGC(enabled=False, interval=3) as manual:
            assert gc.isenabled()
            manual.step(3)
            manual.collect()
        assert len(collections) == 4
    finally:
        gc.callbacks.remove(count)
