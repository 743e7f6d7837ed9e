"""``benchmarks/fim_ablation.py --scale smoke`` end to end: corpus, tokenizer, preprocessing at
every FIM setting, training, HF export and both held-out measurements, for two seeds."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.launch import REPO

SETTINGS = ("FIM 0%", "FIM 50% PSM", "FIM 100% PSM")


def test_smoke_scale_runs_every_setting(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/fim_ablation.py", "--scale", "smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((tmp_path / "results.json").read_text())
    seeds = report["config"]["seeds"]
    assert len(seeds) >= 2
    assert sorted((r["setting"], r["seed"]) for r in report["runs"]) == sorted(
        (s, seed) for s in SETTINGS for seed in seeds
    )
    for run in report["runs"]:
        # Three iterations from a random start: a finite loss near log(vocabulary), never zero.
        assert 0 < run["l2r_loss"] < 1.5 * math.log(report["config"]["vocab"] + 128)
        assert 0 <= run["infill_em"] <= 1 and run["infill_cases"] > 0
        assert run["infill_em"] <= run["infill_edit_sim"] <= 1  # an exact match scores 1
        assert run["fim_tokens"] > 0  # held-out middles were scored, the same ones in both layouts
        for key in ("fim_loss_psm", "fim_loss_spm"):
            assert 0 < run[key] < 1.5 * math.log(report["config"]["vocab"] + 128), (key, run)
    # The FIM rate reached the data: the preprocessing stats count PSM samples per setting.
    for run in report["runs"]:
        tag = f"fim{int(run['fim_rate'] * 100)}_s{run['seed']}"
        fim = json.loads((tmp_path / "data" / f"{tag}.json").read_text())["fim"]
        expected = {0.0: (0, 0), 0.5: (0.3, 0.7), 1.0: (1, 1)}[run["fim_rate"]]
        share = fim["psm"] / (fim["psm"] + fim["plain"])
        assert expected[0] <= share <= expected[1], (tag, fim)
    assert set(report["summary"]) == set(SETTINGS)
    for stats in report["summary"].values():
        for key in ("l2r_loss", "fim_loss_psm", "fim_loss_spm", "infill_em", "infill_edit_sim"):
            assert math.isfinite(stats[key]["mean"]) and math.isfinite(stats[key]["std"])
    table = (tmp_path / "fim_ablation.md").read_text()
    assert all(f"| {s} |" in table for s in SETTINGS) and "nan" not in table
    assert (tmp_path / "fim_ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edit_similarity():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from fim_ablation import edit_similarity

    assert edit_similarity([1, 2, 3], [1, 2, 3]) == 1.0 and edit_similarity([], []) == 1.0
    assert edit_similarity([1, 2, 3, 4], [1, 9, 3]) == 0.5  # one substitution, one deletion of 4
    assert edit_similarity([], [5, 6]) == 0.0
