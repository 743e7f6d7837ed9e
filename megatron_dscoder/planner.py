"""Analytic sizing of a model over a parallel layout, without GPUs (``--dry-run``).

Counts are exact for megatron-core's GPTModel with our layer spec: they equal the parameters the
process actually allocates (``tests/test_planner.py`` checks this on the debug model).
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_dscoder.config import RunConfig


@dataclass(frozen=True)
class StageParams:
    """Parameters held by one tensor-parallel rank of one pipeline stage."""

    stage: int
    num_layers: int
    params_per_rank: int


def layers_per_stage(run: RunConfig) -> list[int]:
    """Decoder layers on each pipeline stage."""
    pp = run.parallel.pipeline_model_parallel_size
    first, last = run.pipeline_layers
    total = run.arch.num_layers
    if first is None and last is None:
        return [total // pp] * pp
    first_n, last_n = first or 0, last or 0
    middle = (total - first_n - last_n) // max(pp - (first is not None) - (last is not None), 1)
    counts = [middle] * pp
    if first is not None:
        counts[0] = first_n
    if last is not None:
        counts[-1] = last_n
    return counts


def params_per_stage(run: RunConfig) -> list[StageParams]:
    """Per-rank parameter counts (TP-sharded weights divided, norms replicated) by stage."""
    arch = run.arch
    tp = run.parallel.tensor_model_parallel_size
    h, d = arch.hidden_size, arch.kv_channels
    sharded_per_layer = (h * (arch.num_attention_heads + 2 * arch.num_query_groups) * d
                         + h * arch.num_attention_heads * d + 3 * h * arch.ffn_hidden_size)
    per_layer = sharded_per_layer // tp + 2 * h
    vocab_shard = arch.padded_vocab_size(tp) // tp * h
    counts = layers_per_stage(run)
    stages = []
    for stage, n in enumerate(counts):
        params = n * per_layer
        if stage == 0:
            params += vocab_shard
        if stage == len(counts) - 1:
            params += vocab_shard + h
        stages.append(StageParams(stage=stage, num_layers=n, params_per_rank=params))
    return stages


def describe(run: RunConfig) -> str:
    """The dry-run report: model, layout and parameters in total and per rank."""
    par = run.parallel
    total = run.arch.num_parameters(par.tensor_model_parallel_size)
    lines = [
        f"model {run.model}: {total:,} parameters ({total / 1e9:.2f}B), padded vocab "
        f"{run.arch.padded_vocab_size(par.tensor_model_parallel_size):,}",
        f"layout: TP={par.tensor_model_parallel_size} PP={par.pipeline_model_parallel_size} "
        f"DP={par.data_parallel_size} SP={par.sequence_parallel} "
        f"distributed-optimizer={par.use_distributed_optimizer} world={par.world_size}",
        f"batch: global {run.train.global_batch_size} x seq {run.train.seq_length}, "
        f"micro {run.train.micro_batch_size}, {run.num_microbatches} micro-batches per DP rank",
    ]
    for s in params_per_stage(run):
        lines.append(f"  stage {s.stage}: {s.num_layers} layers, {s.params_per_rank:,} "
                     f"parameters per rank ({s.params_per_rank / 1e9:.3f}B)")
    return "\n".join(lines)
