"""A checksum manifest cannot be bypassed: a deleted entry, a malformed manifest or a missing one
is refused in one line naming the file (without a training run; the end-to-end refusals at
--load are in test_faults.py)."""

from __future__ import annotations

import json
import os

import pytest

from megatron_dscoder.checkpointing import checksums


@pytest.fixture
def ckpt(tmp_path):
    for rank in range(2):
        (tmp_path / f"__{rank}_0.distcp").write_bytes(os.urandom(4096))
    (tmp_path / ".metadata").write_bytes(b"index")
    (tmp_path / "run_config.json").write_text("{}")
    checksums.write_manifest(tmp_path)
    assert checksums.verify_manifest(tmp_path) == []
    return tmp_path


def _edit(ckpt, change) -> None:
    path = ckpt / "checksums.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_deleted_entry_leaves_its_file_refused(ckpt):
    _edit(ckpt, lambda m: m["files"].pop("__1_0.distcp"))
    (ckpt / "__1_0.distcp").write_bytes(os.urandom(4096))  # corrupted: must not load unchecked
    assert checksums.verify_manifest(ckpt) == [
        f"{ckpt / '__1_0.distcp'}: not listed in {ckpt / 'checksums.json'}"
    ]
    assert checksums.manifest_problem(ckpt, allow_unverified=True) is not None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"files": {}}',
        '{"algorithm": "xxh3_128", "files": []}',
        '{"algorithm": "md0", "files": {}}',
        '{"algorithm": "blake2b", "files": {"__0_0.distcp": {"size": "1", "digest": "x"}}}',
        '{"algorithm": "blake2b", "files": {"../x": {"size": 1, "digest": "x"}}}',
        '{"algorithm": "blake2b", "files": {"__0_0.distcp": null}}',
    ],
)
def test_malformed_manifest_is_one_line_naming_it(ckpt, text):
    (ckpt / "checksums.json").write_text(text)
    (problem,) = checksums.verify_manifest(ckpt)
    assert problem.startswith(str(ckpt / "checksums.json")) and "\n" not in problem
