"""The 16K stage at its real length on a CPU: peak memory by attention backend and sequence length.

    python benchmarks/bench_long_context.py                       # 4K, 8K, 16K x sdpa, unfused
    python benchmarks/bench_long_context.py --seq-lengths 16384 --backends sdpa --iters 5
    python benchmarks/bench_long_context.py --mem-limit-gib 12 --extra "--recompute-granularity full
        --recompute-method uniform"

First a short 4K-stage run of ``debug-4k`` (the debug model with the real sizes' 4,096
positions) writes a checkpoint; then each (backend, length) runs the real 16K recipe from it
(``--stage extend-context``: RoPE base 1e5, linear interpolation x4, 16,384 positions) in a child
process whose address space is capped at ``--mem-limit-gib`` (RLIMIT_AS), so a backend that does
not fit fails inside its own process instead of exhausting the machine. Reported per run: the
child's peak RSS (``wait4``), median step time, the last loss, or what stopped it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PRETRAIN = "-m megatron_dscoder.pretrain --model debug-4k --mock-data --seed 3"


def run_child(argv: list[str], mem_limit_gib: float) -> tuple[int, float, str]:
    """Run ``python ARGV`` under an address-space cap: (status, peak RSS GiB, last stderr line)."""
    limit = int(mem_limit_gib * (1 << 30))

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=err, preexec_fn=cap
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [line for line in err.read().splitlines() if line.strip()]
    return proc.returncode, usage.ru_maxrss / (1 << 20), lines[-1] if lines else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--backends", nargs="+", default=["sdpa", "unfused"])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--mem-limit-gib", type=float, default=24.0)
    p.add_argument("--extra", default="", help="more pretrain flags for every 16K-stage run")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt4k"
        rc, _, last = run_child(
            [*shlex.split(PRETRAIN), "--seq-length", "256", "--train-iters", "2"]
            + ["--global-batch-size", "2", "--save", str(ckpt)],
            args.mem_limit_gib,
        )
        if rc:
            sys.stderr.write(f"4K-stage run failed ({rc}): {last}\n")
            return 1
        rows = []
        for seq in args.seq_lengths:
            for backend in args.backends:
                metrics = Path(tmp) / f"{backend}_{seq}.jsonl"
                argv = shlex.split(PRETRAIN) + [
                    *("--stage", "extend-context", "--load", str(ckpt)),
                    *("--seq-length", str(seq), "--train-iters", str(args.iters)),
                    *("--global-batch-size", "1", "--attention-backend", backend),
                    *("--metrics-jsonl", str(metrics), *shlex.split(args.extra)),
                ]
                rc, rss, last = run_child(argv, args.mem_limit_gib)
                lines = metrics.read_text().splitlines() if metrics.exists() else []
                records = [json.loads(line) for line in lines if line.strip()]
                steps = [r["elapsed_ms"] / 1e3 for r in records[1:]] or [0.0]
                outcome = (
                    f"ok, loss {records[-1]['lm_loss']:.4f}"
                    if rc == 0
                    else f"FAILED rc={rc} under {args.mem_limit_gib:g} GiB: {last[:90]}"
                )
                rows.append(
                    f"{seq:>6} {backend:>8} {len(records):>5} {rss:>9.2f} "
                    f"{statistics.median(steps):>8.2f}  {outcome}"
                )
                sys.stdout.write(rows[-1] + "\n")
                sys.stdout.flush()
    sys.stdout.write(
        "\n   seq  backend iters  peakRSS_GiB  step_s  outcome\n" + "\n".join(rows) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
