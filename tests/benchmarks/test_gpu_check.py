"""``benchmarks/gpu_check.sh`` on a CPU: lint, the launcher step, and the loss comparator.

The steps that need CUDA (activations, MFU, the GPU's debug run) cannot run here; the comparator
is checked on the committed CPU reference, against itself and against a perturbed copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import debug_loss_parity as parity
from tests.launch import REPO

SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def test_shellcheck_clean():
    if not Path(SHELLCHECK).exists():
        pytest.skip("shellcheck not installed")
    proc = subprocess.run(
        [SHELLCHECK, "-x", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


def test_launcher_step_runs_and_is_summarised(tmp_path):
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "STEPS": "launchers",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("\t") for line in (tmp_path / "summary.tsv").read_text().splitlines()]
    assert rows[0] == ["step", "status", "seconds", "limit"]
    assert [r[:2] for r in rows[1:]] == [["launchers", "ok"]]
    results = json.loads((tmp_path / "launchers.json").read_text())
    assert len(results) == 16 and {r["result"] for r in results} == {"ok"}


def _metrics(path: Path, losses: list[float], grad_norms: list[float]) -> Path:
    rows = [
        {"iteration": i + 1, "lm_loss": loss, "grad_norm": g}
        for i, (loss, g) in enumerate(zip(losses, grad_norms, strict=True))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_comparator_accepts_the_reference_and_catches_a_drift(tmp_path, capsys):
    reference = json.loads(parity.REFERENCE.read_text())
    assert reference["command"][3:] == parity.FLAGS  # the committed losses are this command's
    assert len(reference["lm_loss"]) == 20 and reference["device"] == "cpu"
    same = _metrics(tmp_path / "same.jsonl", reference["lm_loss"], reference["grad_norm"])
    assert parity.main(["compare", str(same), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["lm_loss"]["max_rel_diff"] == 0.0

    # Within tolerance: GPU-like rounding differences.
    close = [x * (1 + parity.RTOL_LOSS / 4) for x in reference["lm_loss"]]
    assert (
        parity.main(["compare", str(_metrics(tmp_path / "c.jsonl", close, reference["grad_norm"]))])
        == 0
    )
    # A drift from iteration 7 on (what a wrong CUDA-only path looks like) is reported there.
    drift = [x * (1.01 if i >= 6 else 1) for i, x in enumerate(reference["lm_loss"])]
    out = tmp_path / "drift.json"
    bad = _metrics(tmp_path / "d.jsonl", drift, reference["grad_norm"])
    assert parity.main(["compare", str(bad), "--json", str(out)]) == 1
    result = json.loads(out.read_text())
    assert not result["ok"] and result["lm_loss"]["at_iteration"] >= 7
    # A run that stopped early, or diverged to NaN, fails too.
    short = _metrics(tmp_path / "s.jsonl", reference["lm_loss"][:10], reference["grad_norm"][:10])
    assert parity.main(["compare", str(short)]) == 1
    nan = _metrics(tmp_path / "n.jsonl", [float("nan")] * 20, reference["grad_norm"])
    assert parity.main(["compare", str(nan)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
