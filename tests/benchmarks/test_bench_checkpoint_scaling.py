"""``benchmarks/bench_checkpoint_scaling.py`` at DP=4 on CPU: a routine save spreads its host
memory and its bytes evenly over the data-parallel ranks, and no rank gathers the optimizer
state (before, every rank held about three times the whole state and rank 0 wrote it all)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.launch import REPO


def test_routine_save_is_balanced_over_data_parallel_ranks(tmp_path):
    out = tmp_path / "scaling.json"
    cmd = [sys.executable, "benchmarks/bench_checkpoint_scaling.py", "--formats", "after"]
    cmd += ["--dp", "4", "--hidden-size", "256", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    after = json.loads(out.read_text())["after"]
    assert after["peak_mib_max_over_mean"] <= 1.25, after
    assert after["written_mib_max_over_mean"] <= 1.25, after
    # The whole model's optimizer state is 12 B/parameter; a gather would add all of it.
    assert after["increase_mib_max"] < 0.5 * after["state_mib"], after
    # Each rank writes its quarter of the optimizer state (and a share of the weights).
    assert min(after["per_rank"]["written_mib"]) > 0.25 * after["state_mib"] * 0.9, after
