"""``benchmarks/long_context_eval.py --scale smoke`` end to end: held-out repositories, tokenizer,
repository-level preprocessing, base training, the real ``--stage extend-context``, both HF
exports and the three conditions measured by position, for two seeds."""

from __future__ import annotations

import json
import math

from tests.benchmarks import smokes

CONDITIONS = ("base, no scaling", "base + recipe RoPE, no training", "extended")


def test_smoke_scale_measures_every_condition(tmp_path):
    status, output, tmp_path = smokes.result(__file__, tmp_path)
    assert status == 0, output[-4000:]
    report = json.loads((tmp_path / "results.json").read_text())
    config, seeds = report["config"], report["config"]["seeds"]
    base = config["arch"]["max_position_embeddings"]
    assert len(seeds) >= 2 and report["eval_length"] == 4 * base
    assert sorted((r["condition"], r["seed"]) for r in report["runs"]) == sorted(
        (c, s) for c in CONDITIONS for s in seeds
    )
    # Held out by repository: no held-out repository reached the tokenizer or the training data.
    trained = {json.loads(line)["repo"] for line in (tmp_path / "train.jsonl").open()}
    assert report["heldout_repos"] and not trained & set(report["heldout_repos"])
    assert {w["repo"] for w in report["heldout_windows"]} <= set(report["heldout_repos"])
    ceiling = 1.5 * math.log(config["vocab"] + 128)
    for run in report["runs"]:
        assert len(run["buckets"]) == 4 and len(run["curve"]) == 4 * base // config["fine_bucket"]
        assert all(0 < v < ceiling for v in run["buckets"] + run["curve"]), run
        # Measured through the HF export, which computes our model's logits at 4x base length.
        assert run["max_abs_logits_gap_vs_ours"] < 1e-4, run
    # The mechanism under test: the RoPE each condition ran with, and that it changed the losses.
    by = {(r["condition"], r["seed"]): r for r in report["runs"]}
    for seed in seeds:
        plain, scaled, extended = (by[c, seed] for c in CONDITIONS)
        assert plain["rope"] == [10000, None, base]
        assert scaled["rope"] == extended["rope"] == [100000, {"type": "linear", "factor": 4.0},
                                                      4 * base]  # fmt: skip
        assert plain["curve"] != scaled["curve"] != extended["curve"]
        # The extension stage trained at 4x the base length.
        metrics = (tmp_path / f"metrics_extended_s{seed}.jsonl").read_text().splitlines()
        last = json.loads(metrics[-1])
        tokens = config["extend_iters"] * config["global_batch_size"] * 4 * base
        assert last["consumed_tokens"] == tokens == report["train_tokens"]["extension"]
        assert math.isclose(last["lr"], 0.1 * config["lr"])  # the recipe: LR held at 10 % of peak
    for stats in report["summary"]["buckets"].values():
        assert len(stats["values"]) == len(seeds)
        assert all(math.isfinite(m) and math.isfinite(sd) for m, sd in
                   zip(stats["mean"], stats["std"], strict=True))  # fmt: skip
    table = (tmp_path / "long_context_eval.md").read_text()
    assert all(f"| {c} |" in table for c in CONDITIONS) and "nan" not in table
    assert f"| {3 * base}–{4 * base} |" in table.splitlines()[0]
    assert (tmp_path / "long_context_eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
