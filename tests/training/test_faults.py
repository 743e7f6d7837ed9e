"""Faults and bad input: clear errors naming the file before training, nothing overwritten;
NaN/inf losses skip the update, and too many in a row stop the run with a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from tests.launch import REPO, WORKERS, read_jsonl
from tests.training.conftest import write_prefix

BASE = "--model debug --seq-length 64 --global-batch-size 4 --lr-decay-style constant"


def run_cases(tmp_path, cases: dict[str, str]) -> dict:
    import subprocess
    import sys

    out = tmp_path / "results.json"
    args = [sys.executable, str(WORKERS / "runs.py"), str(out)]
    for name, flags in cases.items():
        args += [name, flags]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(out.read_text())


def tree_state(path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, token_corpus):
    tmp = tmp_path_factory.mktemp("faults")
    good = tmp / "good"
    # Damaged copies of data and checkpoints are prepared after the good checkpoint exists, so
    # the cases run in two in-process batches (one torch import each).
    first = run_cases(
        tmp,
        {
            "good": f"{BASE} --mock-data --train-iters 2 --save {good}",
            "nan_once": f"{BASE} --mock-data --train-iters 5 --inject-nonfinite-loss-iters 3 "
            f"--metrics-jsonl {tmp / 'nan_once.jsonl'}",
            "nan_stop": f"{BASE} --mock-data --train-iters 8 --inject-nonfinite-loss-iters 2 3 4 "
            f"--max-nonfinite-iters 3 --save {tmp / 'nan_ckpt'}",
            "exit_interval": f"{BASE} --mock-data --train-iters 6 --exit-interval 3 "
            f"--save {tmp / 'exit_ckpt'} --metrics-jsonl {tmp / 'exit.jsonl'}",
        },
    )
    ckpt = good / "iter_0000002"
    truncated = tmp / "truncated"
    shutil.copytree(good, truncated)
    shard = sorted((truncated / "iter_0000002").glob("*.distcp"))[0]
    os.truncate(shard, shard.stat().st_size // 2)
    before = tree_state(truncated)
    meta = json.loads((ckpt / "run_config.json").read_text())
    other = tmp / "other_size"
    shutil.copytree(good, other)
    meta["arch"]["num_layers"] = 6
    (other / "iter_0000002" / "run_config.json").write_text(json.dumps(meta))
    tok = token_corpus["tokenizer"]
    bad_idx = tmp / "bad_idx"
    shutil.copy(str(token_corpus["code"]) + ".bin", str(bad_idx) + ".bin")
    shutil.copy(str(token_corpus["code"]) + ".idx", str(bad_idx) + ".idx")
    os.truncate(str(bad_idx) + ".idx", 100)
    big_ids = write_prefix(tmp / "big_ids", [[5, 70000 % 65536, 9]])  # id 4464 > tiny vocab
    data = f"--tokenizer-model {tok} --data-path"
    second = run_cases(
        tmp,
        {
            "truncated_ckpt": f"{BASE} --mock-data --train-iters 3 --load {truncated} "
            f"--save {truncated}",
            "other_size": f"{BASE} --mock-data --train-iters 3 --load {other}",
            "missing_prefix": f"{BASE} {data} {tmp / 'nowhere'} --train-iters 2",
            "truncated_idx": f"{BASE} {data} {bad_idx} --train-iters 2",
            "vocab_mismatch": f"{BASE} {data} {big_ids} --train-iters 2",
            "resume_after_stop": f"{BASE} --mock-data --train-iters 6 --load {tmp / 'nan_ckpt'} "
            f"--metrics-jsonl {tmp / 'after_stop.jsonl'}",
        },
    )
    return {**first, **second, "_tmp": tmp, "_before": before, "_shard": shard}


def test_nan_loss_skips_the_update_and_is_counted(outcomes):
    assert outcomes["nan_once"]["status"] == "ok"
    records = read_jsonl(outcomes["_tmp"] / "nan_once.jsonl")
    by_it = {r["iteration"]: r for r in records}
    assert by_it[3]["lm_loss"] is None and by_it[3]["grad_norm"] is None  # NaN -> null in JSON
    assert by_it[3]["skipped_iterations"] == 1 and by_it[5]["skipped_iterations"] == 1
    assert all(math.isfinite(by_it[i]["lm_loss"]) for i in (1, 2, 4, 5))


def test_too_many_nonfinite_losses_stop_with_a_checkpoint(outcomes):
    res = outcomes["nan_stop"]
    assert res["status"] == "error" and "NonFiniteLossError" in res["message"]
    assert "3 consecutive non-finite losses at iteration 4" in res["message"]
    ckpt_root = outcomes["_tmp"] / "nan_ckpt"
    assert (ckpt_root / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    assert outcomes["resume_after_stop"]["status"] == "ok"
    resumed = read_jsonl(outcomes["_tmp"] / "after_stop.jsonl")
    assert [r["iteration"] for r in resumed] == [5, 6]
    assert all(math.isfinite(r["lm_loss"]) for r in resumed)


def test_truncated_checkpoint_names_the_shard_and_writes_nothing(outcomes):
    res = outcomes["truncated_ckpt"]
    assert res["status"] == "error" and "CheckpointError" in res["message"]
    assert str(outcomes["_shard"]) in res["message"] and "truncated" in res["message"]
    assert tree_state(outcomes["_tmp"] / "truncated") == outcomes["_before"]


def test_checkpoint_of_another_size(outcomes):
    res = outcomes["other_size"]
    assert res["status"] == "error" and "checkpoint of another model" in res["message"]
    assert "num_layers: checkpoint 6 vs run 4" in res["message"]
    assert "run_config.json" in res["message"]


def test_missing_data_prefix(outcomes):
    res = outcomes["missing_prefix"]
    assert res["status"] == "error" and "nowhere.idx: missing" in res["message"]


def test_truncated_idx(outcomes):
    res = outcomes["truncated_idx"]
    assert res["status"] == "error" and "bad_idx.idx: truncated" in res["message"]


def test_tokenizer_vocabulary_does_not_fit_data(outcomes):
    res = outcomes["vocab_mismatch"]
    assert res["status"] == "error" and "big_ids.bin: token id 4464" in res["message"]


def test_exit_interval_checkpoints_and_stops(outcomes):
    assert outcomes["exit_interval"]["status"] == "ok"
    assert [r["iteration"] for r in read_jsonl(outcomes["_tmp"] / "exit.jsonl")] == [1, 2, 3]
    root = outcomes["_tmp"] / "exit_ckpt"
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
