"""A 20-iteration fp32 debug-model run whose losses must match the CPU's, iteration by iteration.

    python benchmarks/debug_loss_parity.py run OUT.jsonl            # train (CUDA when present)
    python benchmarks/debug_loss_parity.py compare OUT.jsonl        # against the CPU reference
    python benchmarks/debug_loss_parity.py reference OUT.jsonl      # (re)make the CPU reference

One process, mock data, seed 1234, fp32, the sdpa backend (the one every device has). Weights are a
pure function of (seed, name, index) and mock samples of (seed, index), so a GPU run starts from
the CPU's exact model and data; what may differ is the order of floating-point sums (cuBLAS and
SDPA kernels against CPU ones). ``compare`` allows a relative difference of ``RTOL_LOSS`` per
iteration on lm_loss (and ``RTOL_GRAD_NORM`` on grad_norm); a bug in a CUDA-only path (a kernel
choice, a dtype, a fused op) shows up orders of magnitude above that. The reference, with the
command that made it, is ``benchmarks/reference/debug_fp32_cpu_losses.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "benchmarks" / "reference" / "debug_fp32_cpu_losses.json"
FLAGS = [
    *("--model", "debug", "--mock-data", "--seed", "1234", "--no-bf16"),
    *("--attention-backend", "sdpa", "--seq-length", "128"),
    *("--micro-batch-size", "4", "--global-batch-size", "8", "--train-iters", "20"),
    *("--lr-warmup-iters", "0", "--log-interval", "1"),
]
"""The run's flags after ``python -m megatron_dscoder.pretrain`` (plus ``--metrics-jsonl``)."""
RTOL_LOSS = 2e-3
RTOL_GRAD_NORM = 2e-2


def command(metrics: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "megatron_dscoder.pretrain",
        *FLAGS,
        "--metrics-jsonl",
        str(metrics),
    ]


def read_series(metrics: Path) -> dict[str, list[float]]:
    """lm_loss and grad_norm by iteration (1..N) from a ``--metrics-jsonl`` file."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "lm_loss" in r and "iteration" in r]
    iterations = [r["iteration"] for r in train]
    if iterations != list(range(1, len(train) + 1)):
        raise ValueError(f"{metrics}: iterations {iterations} are not 1..{len(train)}")
    return {
        "lm_loss": [r["lm_loss"] for r in train],
        "grad_norm": [r["grad_norm"] for r in train],
    }


def compare(series: dict[str, list[float]], reference: dict) -> dict:
    """Per-iteration relative differences against the reference, and the verdict."""
    result: dict = {"rtol": {"lm_loss": RTOL_LOSS, "grad_norm": RTOL_GRAD_NORM}}
    ok = True
    for key, rtol in result["rtol"].items():
        want, got = reference[key], series[key]
        if len(got) != len(want):
            result[key] = {"error": f"{len(got)} iterations, reference has {len(want)}"}
            ok = False
            continue
        rel = [
            abs(g - w) / abs(w) if g is not None and math.isfinite(g) else math.inf
            for g, w in zip(got, want, strict=True)
        ]
        worst = max(range(len(rel)), key=rel.__getitem__)
        result[key] = {"max_rel_diff": rel[worst], "at_iteration": worst + 1, "rel_diff": rel}
        ok = ok and rel[worst] <= rtol
    result["ok"] = ok
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("run", "compare", "reference"))
    p.add_argument("metrics", type=Path, help="the run's --metrics-jsonl file")
    p.add_argument("--reference", type=Path, default=REFERENCE)
    p.add_argument("--json", type=Path, default=None, help="compare: write the result here")
    args = p.parse_args(argv)
    if args.action == "run":
        args.metrics.unlink(missing_ok=True)
        return subprocess.run(command(args.metrics), cwd=REPO).returncode
    series = read_series(args.metrics)
    if args.action == "reference":
        import torch

        record = {
            "made_by": "python benchmarks/debug_loss_parity.py run OUT.jsonl && "
            "python benchmarks/debug_loss_parity.py reference OUT.jsonl (on a CPU)",
            "command": ["python", "-m", "megatron_dscoder.pretrain", *FLAGS],
            "device": "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
            **series,
        }
        tmp = args.reference.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.reference)
        return 0
    reference = json.loads(args.reference.read_text())
    if reference["command"][3:] != FLAGS:
        sys.stderr.write(f"{args.reference} was made with other flags: remake it\n")
        return 2
    result = compare(series, reference)
    for key in ("lm_loss", "grad_norm"):
        entry = result[key]
        print(
            f"{key}: max relative difference {entry.get('max_rel_diff', entry.get('error'))} "
            f"(iteration {entry.get('at_iteration', '-')}), tolerance {result['rtol'][key]:g}"
        )
    print(
        "losses match the CPU reference" if result["ok"] else "MISMATCH against the CPU reference"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
