"""The planner: exact static memory for the debug model on CPU, and the 33B launch plan."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.launch import REPO, WORKERS, python_module

LAUNCH_33B = (
    "--model 33b --dry-run --world-size 256 --tensor-model-parallel-size 4 "
    "--pipeline-model-parallel-size 2 --sequence-parallel --train-iters 100000"
)


@pytest.mark.parametrize("flags", [[], ["--use-distributed-optimizer"]])
def test_static_memory_equals_what_the_process_allocates(flags):
    proc = subprocess.run(
        [sys.executable, str(WORKERS / "planner_check.py"), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["params"][0] == report["params"][1]
    assert report["actual"] == report["planned"]  # weights, grads, optimizer state, in bytes


def _plan(flags: str, status: int = 0) -> str:
    """The dry-run report; the exit status says whether the plan fits (0) or not (1)."""
    proc = python_module("megatron_dscoder.pretrain", *flags.split(), check=False)
    assert proc.returncode == status, proc.stderr[-4000:]
    return proc.stdout


def test_33b_launch_layout_fits_80gb_with_margin():
    out = _plan(LAUNCH_33B + " --use-distributed-optimizer")
    match = re.search(r"FITS: peak ([\d.]+) GiB of 80 GiB \(margin \+([\d.]+) GiB\)", out)
    assert match and float(match.group(2)) > 10
    assert "pipeline bubble 0.8%" in out and "MFU ~" in out


def test_same_layout_without_distributed_optimizer_or_recompute_does_not_fit():
    out = _plan(LAUNCH_33B, status=1)
    match = re.search(r"DOES NOT FIT: peak ([\d.]+) GiB of 80 GiB", out)
    assert match and float(match.group(1)) > 80
    optimizer = float(re.search(r"stage 0: .* optimizer ([\d.]+)", out).group(1))
    assert optimizer > 40  # 12 bytes per parameter on every DP rank, not 1/32 of that


def test_full_recompute_shrinks_activations():
    plain = _plan(LAUNCH_33B + " --use-distributed-optimizer")
    full = _plan(
        LAUNCH_33B + " --use-distributed-optimizer --recompute-granularity full "
        "--recompute-method uniform"
    )

    def activations(text: str) -> float:
        return float(re.search(r"stage 0: .* activations 2 x ([\d.]+)", text).group(1))

    assert activations(full) < activations(plain) / 5
