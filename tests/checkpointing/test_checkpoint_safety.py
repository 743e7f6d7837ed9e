"""Checkpoint safety without a training run: checksums, restricted unpickling, run ownership,
split checks. The end-to-end cases (a flipped shard refused at --load, a crafted .metadata, a
foreign --save, a full disk) are in test_faults.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle

import pytest
import torch

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.checkpointing import checksums, outputs, safe_load
from megatron_dscoder.config.run import ConfigError
from megatron_dscoder.data.indexed import DataError
from megatron_dscoder.datasets.gpt import check_splits
from tests.training.conftest import write_prefix


class Payload:
    """Unpickling this runs ``os.system``: what a crafted checkpoint would carry."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def flip(path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of a file (same size)."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(count)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0xFF for b in data))


def test_manifest_names_the_flipped_file(tmp_path):
    for rank in range(2):
        (tmp_path / f"__{rank}_0.distcp").write_bytes(os.urandom(1 << 16))
    (tmp_path / ".metadata").write_bytes(b"index")
    assert [p.name for p in checksums.written_by(tmp_path, 1, 2)] == ["__1_0.distcp"]
    assert [p.name for p in checksums.written_by(tmp_path, 0, 2)] == [".metadata", "__0_0.distcp"]
    checksums.write_manifest(tmp_path)  # no process group: a world of one
    assert checksums.verify_manifest(tmp_path) == []
    flip(tmp_path / "__1_0.distcp")
    (tmp_path / ".metadata").unlink()
    problems = checksums.verify_manifest(tmp_path)
    assert problems == [
        f"{tmp_path / '.metadata'}: missing (listed in checksums.json)",
        f"{tmp_path / '__1_0.distcp'}: checksum mismatch (corrupted since it was saved)",
    ]


def test_manifest_absent_is_refused_unless_allowed(tmp_path, caplog):
    (problem,) = checksums.verify_manifest(tmp_path)
    assert problem.startswith(f"{tmp_path / 'checksums.json'}: missing")
    assert "--allow-unverified-checkpoint" in problem
    with caplog.at_level(logging.WARNING):
        assert checksums.verify_manifest(tmp_path, allow_unverified=True) == []
    assert "no checksums.json: loaded unverified" in caplog.text


def test_crafted_metadata_is_refused_unrun(tmp_path):
    marker = tmp_path / "PWNED"
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(pickle.UnpicklingError, match="posix.system is not part of"):
        safe_load.read_metadata(tmp_path)
    safe_load.install()  # torch's own reader, as megatron-core calls it, is restricted too
    from torch.distributed.checkpoint import FileSystemReader

    with pytest.raises(pickle.UnpicklingError):
        FileSystemReader(str(tmp_path)).read_metadata()
    assert not marker.exists()


def test_crafted_byte_object_is_refused_unrun(tmp_path):
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    marker = tmp_path / "PWNED"
    blob = io.BytesIO()
    torch.save({"rng": Payload(marker)}, blob)
    blob.seek(0)
    safe_load.install()
    with pytest.raises(pickle.UnpicklingError):
        DefaultLoadPlanner().load_bytes(None, blob)
    assert not marker.exists()
    state = {"numpy": __import__("numpy").random.get_state(), "torch": torch.get_rng_state()}
    good = io.BytesIO()
    torch.save(state, good)
    good.seek(0)
    assert safe_load.load_bytes_object(good)["numpy"][0] == "MT19937"  # RNG states still load


def _fake_checkpoint(root, iteration: int, run_id: str | None) -> None:
    d = checkpointing.iteration_dir(root, iteration)
    d.mkdir(parents=True)
    meta = {"format_version": checkpointing.FORMAT_VERSION, "iteration": iteration}
    if run_id:
        meta["run_id"] = run_id
    (d / "run_config.json").write_text(json.dumps(meta))
    (d / ".metadata").write_bytes(b"")


def test_pruning_keeps_other_runs_and_foreign_save_is_refused(tmp_path):
    for it, rid in ((1, "mine"), (2, "theirs"), (3, "mine"), (4, "mine")):
        _fake_checkpoint(tmp_path, it, rid)
    checkpointing.prune(tmp_path, 1, "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000002", "iter_0000004"]
    with pytest.raises(outputs.OutputError, match=r"iter_0000002 \(run theirs\)"):
        outputs.check_own(tmp_path, "mine", adopt_legacy=False)
    legacy = tmp_path / "legacy"
    _fake_checkpoint(legacy, 1, None)
    outputs.check_own(legacy, "new", adopt_legacy=True)  # resumed from this directory
    with pytest.raises(outputs.OutputError, match="unknown"):
        outputs.check_own(legacy, "new", adopt_legacy=False)


def test_unwritable_outputs_are_named(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for flags, message in (
        ((str(afile / "ckpt"), None, None), "--save .*afile is not a directory"),
        ((None, str(afile / "m.jsonl"), None), "--metrics-jsonl .*afile is not a directory"),
        ((None, str(tmp_path), None), "--metrics-jsonl .*is a directory"),
        ((None, None, str(afile)), "--tensorboard-dir .*afile is not a directory"),
    ):
        with pytest.raises(outputs.OutputError, match=message):
            outputs.check_outputs(*flags)


def test_splits_that_will_be_used_are_checked(tmp_path, caplog):
    few = str(write_prefix(tmp_path / "few", [[5, 6, 7, 1]] * 3))
    with caplog.at_level(logging.WARNING):
        assert check_splits([few], "99,1,0", evaluate=True) is False  # 0 validation documents
        assert "no evaluation will run" in caplog.text
        assert check_splits([few], "100,0,0", evaluate=True) is False
        assert check_splits([few], "2,1,0", evaluate=True) is True
        assert check_splits([few], "99,1,0", evaluate=False) is False  # unused: never built
    for split in ("0,100,0", "0,0,1"):
        with pytest.raises(DataError, match="training split of .*few is empty"):
            check_splits([few], split, evaluate=False)
    with pytest.raises(ConfigError, match="--split 'abc'"):
        check_splits([few], "abc", evaluate=False)


@pytest.mark.parametrize("flag", ["--async-save", "--ckpt-fully-reshardable"])
def test_checkpoint_format_flags_need_save(flag, capsys):
    from megatron_dscoder.config import cli as arguments

    argv = ["--model", "debug", "--mock-data", "--train-iters", "2", flag]
    with pytest.raises(SystemExit) as done:
        arguments.parse(argv, 1)
    assert done.value.code == 2
    assert f"{flag} needs --save DIR" in capsys.readouterr().err


def test_optimizer_format_of_older_checkpoints_and_what_each_loads_at():
    from megatron_dscoder.checkpointing import formats

    older = {"parallel": {"use_distributed_optimizer": True}}  # written before the field
    assert checkpointing.optimizer_format(older) == "fully_reshardable"
    assert checkpointing.optimizer_format({"parallel": {}}) is None
    assert checkpointing.optimizer_format({"optimizer_format": "dp_reshardable"}) == (
        "dp_reshardable"
    )
    at = {"tp": 2, "pp": 1, "dp": 4}
    for layout, tp, pp, distributed, refused in [
        ("dp_reshardable", 2, 1, True, False),  # any DP: the saved TP and PP
        ("dp_reshardable", 1, 1, True, True),
        ("dp_reshardable", 2, 2, True, True),
        ("dp_reshardable", 2, 1, False, True),
        ("fully_reshardable", 1, 2, True, False),
        (None, 1, 2, True, False),
    ]:
        why = formats.layout_problem(at, layout, tp=tp, pp=pp, distributed=distributed)
        assert (why is not None) == refused, (layout, tp, pp, distributed)
