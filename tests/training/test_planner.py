"""The planner: exact static memory for the debug model on CPU, and the 33B launch plan."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.launch import REPO, WORKERS, python_module

LAUNCH_33B = (
    "--model 33b --dry-run --world-size 256 --tensor-model-parallel-size 4 "
    "--pipeline-model-parallel-size 2 --sequence-parallel --train-iters 100000"
)


PLANS = {  # name: (flags, the dry run's exit status: 0 fits, 1 does not)
    "distopt": (f"{LAUNCH_33B} --use-distributed-optimizer", 0),
    "plain": (LAUNCH_33B, 1),
    "full_recompute": (
        f"{LAUNCH_33B} --use-distributed-optimizer --recompute-granularity full "
        "--recompute-method uniform",
        0,
    ),
}
CHECKS = {"local": [], "distopt": ["--use-distributed-optimizer"]}


@pytest.fixture(scope="module")
def processes() -> dict[str, subprocess.CompletedProcess]:
    """Every process of this module (dry runs and planner checks), two at a time: each is one
    interpreter on one core, mostly importing megatron-core."""

    def plan(flags: str) -> subprocess.CompletedProcess:
        return python_module("megatron_dscoder.pretrain", *flags.split(), check=False)

    def check(flags: list[str]) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(WORKERS / "planner_check.py"), *flags]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        jobs = {name: pool.submit(plan, flags) for name, (flags, _) in PLANS.items()}
        jobs |= {f"check_{name}": pool.submit(check, flags) for name, flags in CHECKS.items()}
        return {name: job.result() for name, job in jobs.items()}


@pytest.mark.parametrize("case", CHECKS)
def test_static_memory_equals_what_the_process_allocates(processes, case):
    proc = processes[f"check_{case}"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["params"][0] == report["params"][1]
    assert report["actual"] == report["planned"]  # weights, grads, optimizer state, in bytes


def _plan(processes: dict, name: str) -> str:
    """The dry-run report; the exit status says whether the plan fits (0) or not (1)."""
    proc = processes[name]
    assert proc.returncode == PLANS[name][1], proc.stderr[-4000:]
    return proc.stdout


def test_33b_launch_layout_fits_80gb_with_margin(processes):
    out = _plan(processes, "distopt")
    match = re.search(r"FITS: peak ([\d.]+) GiB of 80 GiB \(margin \+([\d.]+) GiB\)", out)
    assert match and float(match.group(2)) > 10
    assert "pipeline bubble 0.8%" in out and "MFU ~" in out


def test_same_layout_without_distributed_optimizer_or_recompute_does_not_fit(processes):
    out = _plan(processes, "plain")
    match = re.search(r"DOES NOT FIT: peak ([\d.]+) GiB of 80 GiB", out)
    assert match and float(match.group(1)) > 80
    optimizer = float(re.search(r"stage 0: .* optimizer ([\d.]+)", out).group(1))
    assert optimizer > 40  # 12 bytes per parameter on every DP rank, not 1/32 of that


def test_full_recompute_shrinks_activations(processes):
    plain, full = _plan(processes, "distopt"), _plan(processes, "full_recompute")

    def activations(text: str) -> float:
        return float(re.search(r"stage 0: .* activations 2 x ([\d.]+)", text).group(1))

    assert activations(full) < activations(plain) / 5
