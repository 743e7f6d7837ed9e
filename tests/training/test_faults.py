"""Faults and bad input: clear errors naming the file before training, nothing overwritten;
NaN/inf losses skip the update, and too many in a row stop the run with a checkpoint; corrupted
or crafted checkpoints are refused at --load; a full disk during a save keeps the previous
checkpoint (on a small tmpfs, mounted when the tests run as root).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from tests.checkpointing.test_checkpoint_safety import Payload, flip
from tests.launch import REPO, WORKERS, python_module, read_jsonl
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


def mount_small_tmpfs(path, size: str = "8m") -> bool:
    """A tmpfs that holds one debug checkpoint (5.6 MB) but not two; needs root on Linux."""
    path.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, token_corpus):
    tmp = tmp_path_factory.mktemp("faults")
    good = tmp / "good"
    full_disk = mount_small_tmpfs(tmp / "small")
    extra = {
        "disk_full": f"{BASE} --mock-data --train-iters 3 --save {tmp / 'small' / 'ckpt'} "
        "--save-interval 1"
    }
    # Damaged copies of data and checkpoints are prepared after the good checkpoint exists, so
    # the cases run in two in-process batches (one torch import each).
    try:
        first = run_cases(tmp, {**_first_cases(tmp, good), **(extra if full_disk else {})})
        if full_disk:
            first["_small"] = sorted(p.name for p in (tmp / "small" / "ckpt").iterdir())
    finally:
        if full_disk:
            subprocess.run(["umount", str(tmp / "small")], check=True)
    cases, facts = _second_cases(tmp, good, token_corpus)
    second = run_cases(tmp, cases)
    return {**first, **second, **facts, "_tmp": tmp, "_full_disk": full_disk}


def _first_cases(tmp, good) -> dict[str, str]:
    return {
        "good": f"{BASE} --mock-data --train-iters 2 --save {good}",
        "nan_once": f"{BASE} --mock-data --train-iters 5 --inject-nonfinite-loss-iters 3 "
        f"--metrics-jsonl {tmp / 'nan_once.jsonl'}",
        "nan_stop": f"{BASE} --mock-data --train-iters 8 --inject-nonfinite-loss-iters 2 3 4 "
        f"--max-nonfinite-iters 3 --save {tmp / 'nan_ckpt'}",
        "exit_interval": f"{BASE} --mock-data --train-iters 6 --exit-interval 3 "
        f"--save {tmp / 'exit_ckpt'} --metrics-jsonl {tmp / 'exit.jsonl'}",
        "nan_no_save": f"{BASE} --mock-data --train-iters 3 --inject-nonfinite-loss-iters 1 2 "
        "--max-nonfinite-iters 2",
        # A finite loss with a NaN gradient element (on one rank): skipped and counted.
        "nan_grad": f"{BASE} --mock-data --train-iters 4 --inject-nonfinite-grad-iters 2 "
        f"--metrics-jsonl {tmp / 'nan_grad.jsonl'}",
        "nan_grad_stop": f"{BASE} --mock-data --train-iters 6 --inject-nonfinite-grad-iters 2 3 "
        f"--max-nonfinite-iters 2 --save {tmp / 'grad_ckpt'}",
    }


def _second_cases(tmp, good, token_corpus) -> tuple[dict[str, str], dict]:
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
    few = write_prefix(tmp / "few", [[5, 6, 7, 8, 9, 10] * 20] * 3)  # 3 documents
    data = f"--tokenizer-model {tok} --data-path"
    for name in ("flipped", "crafted", "legacy"):
        shutil.copytree(good, tmp / name)
    flip(sorted((tmp / "flipped" / "iter_0000002").glob("*.distcp"))[-1])
    crafted = pickle.dumps(Payload(tmp / "PWNED"))
    (tmp / "crafted" / "iter_0000002" / ".metadata").write_bytes(crafted)
    (tmp / "legacy" / "iter_0000002" / "checksums.json").unlink()
    stage_cases = _stage_cases(tmp, good, token_corpus)
    cases = {
        "truncated_ckpt": f"{BASE} --mock-data --train-iters 3 --load {truncated} "
        f"--save {truncated}",
        "other_size": f"{BASE} --mock-data --train-iters 3 --load {other}",
        "missing_prefix": f"{BASE} {data} {tmp / 'nowhere'} --train-iters 2",
        "truncated_idx": f"{BASE} {data} {bad_idx} --train-iters 2",
        "vocab_mismatch": f"{BASE} {data} {big_ids} --train-iters 2",
        "resume_after_stop": f"{BASE} --mock-data --train-iters 6 --load {tmp / 'nan_ckpt'} "
        f"--metrics-jsonl {tmp / 'after_stop.jsonl'}",
        "flipped_shard": f"{BASE} --mock-data --train-iters 3 --load {tmp / 'flipped'}",
        "crafted_metadata": f"{BASE} --mock-data --train-iters 3 --load {tmp / 'crafted'}",
        "legacy_no_manifest": f"{BASE} --mock-data --train-iters 3 --load {tmp / 'legacy'}",
        "legacy_allowed": f"{BASE} --mock-data --train-iters 3 --load {tmp / 'legacy'} "
        "--allow-unverified-checkpoint",
        **stage_cases,
        "foreign_save": f"{BASE} --mock-data --train-iters 1 --save {good}",
        "few_documents": f"{BASE} {data} {few} --train-iters 2 --eval-interval 1 "
        f"--metrics-jsonl {tmp / 'few.jsonl'}",
        "train_split_empty": f"{BASE} {data} {few} --train-iters 2 --split 0,100,0",
    }
    return cases, {"_before": before, "_shard": shard}


def _stage_cases(tmp, good, token_corpus) -> dict[str, str]:
    """A stage saved into its base's directory, other precisions, damaged manifests."""
    from megatron_dscoder.checkpointing import checksums
    from megatron_dscoder.instruct.encode import write_sft
    from megatron_dscoder.tokenizer import load_tokenizer
    from tests.training.sft_helpers import instruction_set

    tok = token_corpus["tokenizer"]
    write_sft(instruction_set()[:4], load_tokenizer(tok), str(tmp / "sft_set"))
    for name in ("stage_base", "no_entry", "nan_adam", "damaged"):
        shutil.copytree(good, tmp / name)
    damaged = tmp / "damaged" / "iter_0000002"
    (damaged / "checksums.json").unlink()
    tail = sorted(damaged.glob("*.distcp"))[0]
    with open(tail, "r+b") as f:  # the zip directory at the end of a shard
        f.seek(tail.stat().st_size - 64)
        f.write(bytes(64))
    manifest = tmp / "no_entry" / "iter_0000002" / "checksums.json"
    entries = json.loads(manifest.read_text())
    shard = sorted((tmp / "no_entry" / "iter_0000002").glob("*.distcp"))[0]
    del entries["files"][shard.name]
    manifest.write_text(json.dumps(entries))
    # NaN bytes in the middle of the largest shard (Adam state), manifest removed: the weights
    # turn NaN after one update; no checkpoint may be written from them.
    nan_dir = tmp / "nan_adam" / "iter_0000002"
    big = max(nan_dir.glob("*.distcp"), key=lambda p: p.stat().st_size)
    with open(big, "r+b") as f:
        f.seek(big.stat().st_size // 2)
        f.write(b"\xff" * 256)
    (nan_dir / "checksums.json").unlink()
    assert checksums.verify_manifest(tmp / "stage_base" / "iter_0000002") == []
    base, sft_data = tmp / "stage_base", f"--data-path {tmp / 'sft_set'} --tokenizer-model {tok}"
    return {
        "extend_into_base": f"--stage extend-context --mock-data --global-batch-size 4 "
        f"--train-iters 4 --load {base} --save {base} --keep-checkpoints 1",
        # the base trained on mock tokens (2,048 rows): its tokenizer is not the SFT data's
        "sft_into_base": f"--stage sft {sft_data} --global-batch-size 4 --train-iters 4 "
        "--lr-warmup-iters 0 --allow-vocab-mismatch "
        f"--load {base} --save {base} --keep-checkpoints 1",
        "other_precision": f"{BASE} --mock-data --train-iters 3 --bf16 --load {base} --save {base}",
        "missing_entry": f"{BASE} --mock-data --train-iters 3 --load {tmp / 'no_entry'}",
        "damaged_unverified": f"{BASE} --mock-data --train-iters 3 --load {tmp / 'damaged'} "
        "--allow-unverified-checkpoint",
        "nan_weights": f"{BASE} --mock-data --train-iters 5 --load {tmp / 'nan_adam'} "
        f"--allow-unverified-checkpoint --max-nonfinite-iters 1 --save {tmp / 'nan_fresh'}",
    }


def test_nan_gradient_skips_the_update_and_is_counted(outcomes):
    assert outcomes["nan_grad"]["status"] == "ok"
    by_it = {r["iteration"]: r for r in read_jsonl(outcomes["_tmp"] / "nan_grad.jsonl")}
    assert math.isfinite(by_it[2]["lm_loss"]) and by_it[2]["grad_norm"] is None
    assert by_it[2]["skipped_iterations"] == 1 and by_it[4]["skipped_iterations"] == 1
    assert all(math.isfinite(by_it[i]["lm_loss"]) for i in (3, 4))
    assert all(math.isfinite(by_it[i]["grad_norm"]) for i in (1, 3, 4))
    res = outcomes["nan_grad_stop"]
    assert res["status"] == "error" and "2 consecutive non-finite" in res["message"]
    root = outcomes["_tmp"] / "grad_ckpt"
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == "3"


def test_no_checkpoint_is_written_from_nonfinite_weights(outcomes):
    res = outcomes["nan_weights"]
    assert res["status"] == "error", res
    assert "non-finite weights at iteration" in res["message"]
    assert "no checkpoint written" in res["message"]
    fresh = outcomes["_tmp"] / "nan_fresh"
    assert not list(fresh.glob("iter_*")) if fresh.exists() else True


def test_a_stage_refuses_its_bases_directory_and_prunes_nothing(outcomes):
    base = outcomes["_tmp"] / "stage_base"
    for case, stage in (("extend_into_base", "extend-context"), ("sft_into_base", "sft")):
        res = outcomes[case]
        assert res["status"] == "error" and "StageMismatch" in res["message"], res
        assert f"a checkpoint of stage pretrain, not of this {stage} run" in res["message"]
        assert str(base / "iter_0000002" / "run_config.json") in res["message"]
    assert sorted(p.name for p in base.glob("iter_*")) == ["iter_0000002"]
    assert (base / "latest_checkpointed_iteration.txt").read_text().strip() == "2"


def test_resuming_in_another_precision_is_refused_before_the_model(outcomes):
    res = outcomes["other_precision"]
    assert res["status"] == "error" and "saved in fp32 (--no-bf16)" in res["message"], res
    assert "this run is bf16 (--bf16)" in res["message"] and "--no-load-optim" in res["message"]


def test_a_damaged_checkpoint_without_manifest_is_one_error_naming_it(outcomes):
    res = outcomes["damaged_unverified"]
    assert res["status"] == "error" and res["message"].startswith("CheckpointError: "), res
    damaged = outcomes["_tmp"] / "damaged" / "iter_0000002"
    assert f"{damaged}: cannot be loaded, corrupted? (RuntimeError: " in res["message"]
    assert "\n" not in res["message"]


def test_a_deleted_manifest_entry_is_refused_naming_the_file(outcomes):
    res = outcomes["missing_entry"]
    assert res["status"] == "error" and "not listed in" in res["message"], res
    assert ".distcp: not listed in" in res["message"]


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


def test_nonfinite_stop_without_save_says_nothing_was_saved(outcomes):
    res = outcomes["nan_no_save"]
    assert res["status"] == "error" and "nothing saved (no --save)" in res["message"]
    assert "None" not in res["message"]


def test_flipped_bytes_in_a_shard_are_refused_naming_it(outcomes):
    res = outcomes["flipped_shard"]
    assert res["status"] == "error" and "CheckpointError" in res["message"]
    shard = sorted((outcomes["_tmp"] / "flipped" / "iter_0000002").glob("*.distcp"))[-1]
    assert f"{shard}: checksum mismatch" in res["message"]


def test_crafted_metadata_is_refused_without_running_it(outcomes):
    res = outcomes["crafted_metadata"]
    assert res["status"] == "error" and ".metadata: refused" in res["message"]
    assert "posix.system is not part of a checkpoint index" in res["message"]
    assert not (outcomes["_tmp"] / "PWNED").exists()


def test_checkpoint_without_manifest_needs_the_explicit_flag(outcomes):
    res = outcomes["legacy_no_manifest"]
    assert res["status"] == "error" and "checksums.json: missing" in res["message"], res
    assert "--allow-unverified-checkpoint" in res["message"]
    assert outcomes["legacy_allowed"]["status"] == "ok"


def test_foreign_save_directory_is_refused_before_the_model(outcomes):
    res = outcomes["foreign_save"]
    assert res["status"] == "error" and "OutputPathError" in res["message"]
    assert "holds checkpoints of another run: iter_0000002" in res["message"]
    root = outcomes["_tmp"] / "good"
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert sorted(p.name for p in root.glob("iter_*")) == ["iter_0000002"]


def test_small_splits_warn_or_fail_and_never_hang(outcomes):
    assert outcomes["few_documents"]["status"] == "ok"  # validation split empty: no evaluation
    records = read_jsonl(outcomes["_tmp"] / "few.jsonl")
    assert [r["iteration"] for r in records] == [1, 2] and all("val_loss" not in r for r in records)
    res = outcomes["train_split_empty"]
    assert res["status"] == "error" and "training split of" in res["message"]


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(outcomes):
    if not outcomes["_full_disk"]:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    res = outcomes["disk_full"]
    assert res["status"] == "error" and "no space left on device" in res["message"]
    assert "iter_0000001 is still the latest" in res["message"]
    # no .partial left behind; the tracker still names the last complete checkpoint
    assert outcomes["_small"] == ["iter_0000001", "latest_checkpointed_iteration.txt"]


def test_cli_prints_one_line_and_exits_2_before_the_model(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = python_module(
        "megatron_dscoder.pretrain",
        *f"{BASE} --mock-data --train-iters 1 --save {afile / 'ckpt'}".split(),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and f"--save {afile / 'ckpt'}" in proc.stderr
    assert "afile is not a directory" in proc.stderr
