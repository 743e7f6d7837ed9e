"""Plan a run without GPUs (``--dry-run``): parameters, memory and time per rank, for any layout.

Static memory follows megatron-core exactly: the DDP gradient buffer is fp32; with the
distributed optimizer every parameter starts on a 64-element boundary and the buffer is padded
to a multiple of lcm(DP, 128), and each DP rank keeps optimizer state for its 1/DP of it. Mixed
precision (GPU) holds bf16 weights, an fp32 master copy and two fp32 Adam moments; fp32 (CPU)
holds no master copy. ``tests/training/test_planner.py`` checks these numbers against what the debug
model allocates on CPU.

Activations per micro-batch follow ``training/activations.py``: what megatron-core really keeps
for backward for the run's build (local or TE spec, attention kernel, fused or decomposed
RMSNorm, fused or unfused RoPE and SwiGLU, recompute granularity, method and modules), which
``benchmarks/bench_activations.py`` measures. A GPU plan (``mixed_precision``) assumes the GPU's
kernels (bf16, fused ``rms_norm``, ``[b, s, heads, d]`` SDPA output); a CPU plan, the CPU's.
The last stage adds its logits (bf16) and their fp32 copy in the loss, ``(e + 4) V / TP``.

With 1F1B the first stage holds ``PP`` micro-batches in flight. Time is the model FLOPs
(``flops.py``) at an assumed fraction of ``--peak-tflops``, stretched by the pipeline bubble.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

from megatron_dscoder.config.run import RunConfig
from megatron_dscoder.model.flops import PLANNING_PEAK_TFLOPS, flops_per_iteration
from megatron_dscoder.training.activations import LayerImpl, layer_impl, stage_bytes

GIB = float(1 << 30)


def layers_per_stage(run: RunConfig) -> list[int]:
    """Decoder layers on each pipeline stage."""
    pp = run.parallel.pipeline_model_parallel_size
    first, last = run.pipeline_layers
    total = run.arch.num_layers
    if first is None and last is None:
        return [total // pp] * pp
    middle_stages = pp - (first is not None) - (last is not None)
    middle = (total - (first or 0) - (last or 0)) // max(middle_stages, 1)
    counts = [middle] * pp
    if first is not None:
        counts[0] = first
    if last is not None:
        counts[-1] = last
    return counts


def stage_param_numels(run: RunConfig, stage: int) -> list[int]:
    """Element counts of one TP rank's parameters on ``stage``, in module order."""
    a, tp = run.arch, run.parallel.tensor_model_parallel_size
    h, d = a.hidden_size, a.kv_channels
    layer = [
        h,
        h * a.num_attention_heads * d // tp,  # norm, proj
        (a.num_attention_heads + 2 * a.num_query_groups) * d * h // tp,  # qkv
        h,
        2 * a.ffn_hidden_size * h // tp,
        h * a.ffn_hidden_size // tp,
    ]  # norm, fc1, fc2
    counts = layers_per_stage(run)
    vocab_shard = a.padded_vocab_size(tp) // tp * h
    numels = [vocab_shard] if stage == 0 else []
    numels += layer * counts[stage]
    if stage == len(counts) - 1:
        numels += [h, vocab_shard]
    return numels


def grad_buffer(numels: list[int], dp: int, distributed_optimizer: bool) -> tuple[int, int]:
    """(buffer elements, real parameter elements owned by one DP rank's optimizer shard)."""
    if not distributed_optimizer:
        return sum(numels), sum(numels)
    end, spans = 0, []
    for n in reversed(numels):  # megatron-core fills the buffer in reverse parameter order
        start = -(-end // 64) * 64
        spans.append((start, start + n))
        end = start + n
    total = -(-end // math.lcm(dp, 128)) * math.lcm(dp, 128)
    shard = total // dp  # rank 0's shard; the most loaded one differs by padding at most
    owned = sum(max(0, min(e, shard) - s) for s, e in spans)
    return total, owned


@dataclass(frozen=True)
class StagePlan:
    """Memory of one rank of one pipeline stage, in bytes."""

    stage: int
    num_layers: int
    params: int
    weights: int
    grads: int
    optimizer: int
    activations_per_microbatch: int
    in_flight: int

    def total(self, micro_batch_size: int) -> int:
        """Static memory plus the in-flight activations at ``micro_batch_size``."""
        static = self.weights + self.grads + self.optimizer
        return static + self.in_flight * micro_batch_size * self.activations_per_microbatch


def layer_impl_of(run: RunConfig, mixed_precision: bool = True) -> LayerImpl:
    """The :class:`LayerImpl` the run builds: on a GPU in bf16 (``mixed_precision``), else on a
    CPU in the run's precision. ``auto`` plans TE when it is importable here, else sdpa."""
    from megatron_dscoder.model.attention import have_transformer_engine
    from megatron_dscoder.training.build import build_transformer_config

    train = dataclasses.replace(run.train, bf16=True) if mixed_precision else run.train
    config = build_transformer_config(dataclasses.replace(run, train=train))
    backend = run.train.attention_backend
    if backend == "auto":
        backend = "transformer_engine" if have_transformer_engine() else "sdpa"
    return layer_impl(config, backend, cuda=mixed_precision)


def activation_bytes_per_token(
    run: RunConfig, num_layers: int, last: bool, impl: LayerImpl | None = None
) -> float:
    """Stored activations per token on one rank for ``num_layers`` layers (the GPU build unless
    ``impl`` says otherwise). The first stage needs no extra term: the embedding's output is
    layer 0's input, which that layer's norm (or checkpoint) keeps."""
    a, par, t = run.arch, run.parallel, run.train
    impl = impl or layer_impl_of(run)
    stored = stage_bytes(a, impl, num_layers, t.seq_length, t.micro_batch_size)
    if last:
        tp = par.tensor_model_parallel_size
        stored += (impl.bytes_per_element + 4) * a.padded_vocab_size(tp) / tp
    return stored / par.context_parallel_size


def describe_impl(impl: LayerImpl) -> str:
    """``sdpa (RMSNorm fused, RoPE fused, SwiGLU unfused)``: what the activations assume."""
    fused = {"RMSNorm": impl.norm_fused, "RoPE": impl.rope_fused, "SwiGLU": impl.swiglu_fused}
    parts = ", ".join(f"{name} {'fused' if on else 'unfused'}" for name, on in fused.items())
    return f"{impl.backend} ({parts})"


def plan(run: RunConfig, mixed_precision: bool = True) -> list[StagePlan]:
    """Per-stage memory plan; ``mixed_precision`` False models the fp32 CPU path."""
    par, t = run.parallel, run.train
    dp, pp = par.data_parallel_size, par.pipeline_model_parallel_size
    counts = layers_per_stage(run)
    impl = layer_impl_of(run, mixed_precision)
    out = []
    for stage, n in enumerate(counts):
        numels = stage_param_numels(run, stage)
        buffer, owned = grad_buffer(numels, dp, par.use_distributed_optimizer)
        stored = buffer if par.use_distributed_optimizer else sum(numels)
        weights = stored * (2 if mixed_precision else 4)
        per_param_state = 12 if mixed_precision else 8  # (master +) exp_avg + exp_avg_sq
        act = activation_bytes_per_token(run, n, stage == pp - 1, impl)
        act *= t.seq_length
        out.append(
            StagePlan(
                stage=stage,
                num_layers=n,
                params=sum(numels),
                weights=weights,
                grads=buffer * 4,
                optimizer=owned * per_param_state,
                activations_per_microbatch=int(act),
                in_flight=min(pp - stage, run.num_microbatches),
            )
        )
    return out


def bubble_fraction(run: RunConfig) -> float:
    """Idle share of a 1F1B pipeline: (PP - 1) / (m + PP - 1)."""
    pp, m = run.parallel.pipeline_model_parallel_size, run.num_microbatches
    return (pp - 1) / (m + pp - 1)


def describe(
    run: RunConfig,
    gpu_memory_gib: float = 80.0,
    peak_tflops: float = 989.0,
    efficiency: float = 0.45,
) -> tuple[str, bool]:
    """The dry-run report, and whether every stage fits ``gpu_memory_gib``."""
    par, t = run.parallel, run.train
    total = run.arch.num_parameters(par.tensor_model_parallel_size)
    stages = plan(run)
    lines = [
        f"model {run.model}: {total:,} parameters ({total / 1e9:.2f}B), padded vocab "
        f"{run.arch.padded_vocab_size(par.tensor_model_parallel_size):,}",
        f"layout: TP={par.tensor_model_parallel_size} PP={par.pipeline_model_parallel_size} "
        f"CP={par.context_parallel_size} DP={par.data_parallel_size} SP={par.sequence_parallel} "
        f"distributed-optimizer={par.use_distributed_optimizer} "
        f"recompute={t.recompute_granularity or 'none'} world={par.world_size}",
        f"batch: global {t.global_batch_size} x seq {t.seq_length}, micro {t.micro_batch_size}, "
        f"{run.num_microbatches} micro-batches per DP rank, pipeline bubble "
        f"{100 * bubble_fraction(run):.1f}%",
        f"memory per GPU (GiB, bf16 mixed precision; budget {gpu_memory_gib:g}), activations "
        f"as the {describe_impl(layer_impl_of(run))} build keeps them:",
    ]
    budget = gpu_memory_gib * GIB
    worst = 0.0
    for s in stages:
        used = s.total(t.micro_batch_size)
        worst = max(worst, used)
        act = s.activations_per_microbatch
        fits = int((budget - (s.weights + s.grads + s.optimizer)) // max(s.in_flight * act, 1))
        lines.append(
            f"  stage {s.stage}: {s.num_layers} layers, {s.params:,} parameters per rank "
            f"({s.params / 1e9:.3f}B) | weights {s.weights / GIB:.1f} grads {s.grads / GIB:.1f} "
            f"optimizer {s.optimizer / GIB:.1f} activations {s.in_flight} x "
            f"{act * t.micro_batch_size / GIB:.2f} = total {used / GIB:.1f} | largest "
            f"micro-batch that fits: {max(fits, 0)}"
        )
    verdict = "FITS" if worst <= budget else "DOES NOT FIT"
    lines.append(
        f"{verdict}: peak {worst / GIB:.1f} GiB of {gpu_memory_gib:g} GiB "
        f"(margin {(budget - worst) / GIB:+.1f} GiB)"
    )
    flops = flops_per_iteration(run.arch, t.global_batch_size, t.seq_length)
    seconds = (
        flops / (par.world_size * peak_tflops * 1e12 * efficiency) / (1 - bubble_fraction(run))
    )
    mfu = efficiency * (1 - bubble_fraction(run))
    lines.append(
        f"time: {flops / 1e15:,.1f} PFLOP per step -> ~{seconds:.2f} s/step at "
        f"{efficiency:.0%} of {peak_tflops:g} TFLOP/s, MFU ~{mfu:.1%}, "
        f"{t.global_batch_size * t.seq_length / seconds / par.world_size:,.0f} "
        f"tokens/s per GPU"
    )
    return "\n".join(lines), worst <= budget


def dry_run(run: RunConfig, gpu_memory_gib: float, efficiency: float) -> int:
    """``--dry-run``: check ``--load`` (it must exist and hold this architecture), print the
    plan; exit status 0 when it fits, 1 when it does not."""
    if run.checkpoint.load:
        from megatron_dscoder.training.resume import preflight

        preflight(run)
    report, fits = describe(
        run,
        gpu_memory_gib=gpu_memory_gib,
        peak_tflops=run.logging.peak_tflops or PLANNING_PEAK_TFLOPS,
        efficiency=efficiency,
    )
    sys.stdout.write(report + "\n")
    return 0 if fits else 1
