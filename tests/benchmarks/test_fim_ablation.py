"""``benchmarks/fim_ablation.py --scale smoke`` end to end: corpus, tokenizer, preprocessing at
the smoke scale's settings (plain only; half FIM with PSM and SPM mixed), training, HF export and
every held-out measurement, for two seeds."""

from __future__ import annotations

import json
import math
import sys

from tests.benchmarks import smokes
from tests.launch import REPO


def _layouts(prefix, ids) -> dict[str, int]:
    """Samples of the written ``.bin/.idx`` by layout, as megatron-core's IndexedDataset reads
    them: PSM starts ``<fim_begin> prefix``, SPM ``<fim_begin><fim_hole>``."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    counts = {"psm": 0, "spm": 0, "plain": 0, "sentinels": 0}
    for doc in IndexedDataset(str(prefix)):
        doc = [int(t) for t in doc]
        counts["sentinels"] += sum(t in (ids.fim_begin, ids.fim_hole, ids.fim_end) for t in doc)
        if doc[0] != ids.fim_begin:
            counts["plain"] += 1
        else:
            counts["spm" if doc[1] == ids.fim_hole else "psm"] += 1
    return counts


def test_smoke_scale_runs_every_setting(tmp_path):
    from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids

    status, output, tmp_path = smokes.result(__file__, tmp_path)
    assert status == 0, output[-4000:]
    report = json.loads((tmp_path / "results.json").read_text())
    seeds, settings = report["config"]["seeds"], report["config"]["settings"]
    assert len(seeds) >= 2 and settings == ["FIM 0%", "FIM 50% PSM+SPM"]
    assert sorted((r["setting"], r["seed"]) for r in report["runs"]) == sorted(
        (s, seed) for s in settings for seed in seeds
    )
    bound = 1.5 * math.log(report["config"]["vocab"] + 128)  # a few steps from a random start
    for run in report["runs"]:
        for key in ("l2r_loss", "fim_loss_psm", "fim_loss_spm"):
            assert 0 < run[key] < bound, (key, run)
        assert 0 <= run["infill_em"] <= 1 and run["infill_cases"] == 2
        assert run["infill_em"] <= run["infill_edit_sim"] <= 1  # an exact match scores 1
        assert run["fim_tokens"] > 0 and run["l2r_tokens"] > 0
        iters = [it for it, loss in run["train_loss_curve"]]
        assert iters[-1] == report["config"]["train_iters"], run["train_loss_curve"]
        assert all(0 < loss < bound for it, loss in run["train_loss_curve"])
    # The FIM setting reached the data: the samples written, read back, have the layouts the
    # preprocessing stats count (FIM is drawn before deduplication drops its few samples), none
    # with FIM 0 %, both PSM and SPM with the mixed setting.
    ids = special_token_ids(load_tokenizer(tmp_path / "tokenizer"), ("fim_begin", "fim_hole"))
    for run in report["runs"]:
        stats = json.loads((tmp_path / "data" / f"{run['tag']}.json").read_text())
        drawn, got = stats["fim"], _layouts(tmp_path / "data" / run["tag"], ids)
        assert got["psm"] + got["spm"] + got["plain"] == stats["documents_out"]
        assert sum(drawn.values()) == stats["documents_before_dedup"], (drawn, stats)
        # (a PSM sample with an empty prefix reads as SPM, so FIM samples are compared as one)
        drawn_fim, got_fim = drawn["psm"] + drawn["spm"], got["psm"] + got["spm"]
        assert got_fim <= drawn_fim and got["plain"] <= drawn["plain"], (drawn, got)
        if run["fim_rate"] == 0:
            assert drawn["psm"] == drawn["spm"] == got["sentinels"] == 0
        else:
            fim, total = got["psm"] + got["spm"], stats["documents_out"]
            assert 0.3 <= fim / total <= 0.7 and 0.3 <= got["spm"] / fim <= 0.7, (run, got)
            assert got["sentinels"] >= 3 * fim  # every FIM sample has its three sentinels
    assert list(report["summary"]) == settings
    for stats in report["summary"].values():
        for key in ("l2r_loss", "fim_loss_psm", "fim_loss_spm", "infill_em", "infill_edit_sim"):
            assert math.isfinite(stats[key]["mean"]) and math.isfinite(stats[key]["std"])
            assert len(stats[key]["values"]) == len(seeds)
    table = (tmp_path / "fim_ablation.md").read_text()
    assert all(f"| {s} |" in table for s in settings) and "nan" not in table
    assert (tmp_path / "fim_ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edit_similarity():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from fim_ablation import edit_similarity

    assert edit_similarity([1, 2, 3], [1, 2, 3]) == 1.0 and edit_similarity([], []) == 1.0
    assert edit_similarity([1, 2, 3, 4], [1, 9, 3]) == 0.5  # one substitution, one deletion of 4
    assert edit_similarity([], [5, 6]) == 0.0
