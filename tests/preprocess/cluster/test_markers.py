"""Completion markers of a kept work directory: reused only while the files they list match their
checksums and the inputs are unchanged; a damaged marker counts as none."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from megatron_dscoder.preprocess.cluster.workdir import WorkDirError
from tests.conftest import stdlib_texts
from tests.preprocess.preprocess_helpers import run, write_jsonl

#: Several input references (pass-1 tasks), several shards each.
SMALL = {"partition_mb": 0.1, "task_bytes": 32 << 10, "region_bytes": 32 << 10}


def corpus(path: Path) -> Path:
    """About 0.35 MB of JSONL: standard-library modules, every other one in a repository."""
    records = [
        {"text": text, "repo": f"r{n}" if n % 2 else "", "path": f"m{n}/mod.py"}
        for n, text in enumerate(stdlib_texts())
    ]
    return write_jsonl(path, records)


def flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def test_damaged_work_files_and_markers_are_redone_changed_inputs_refused(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    data = corpus(tmp_path / "in.jsonl")
    work, out = tmp_path / "work", tmp_path / "out" / "data"
    options = {"work_dir": str(work), "prefix": out, **SMALL}
    first = run(tmp_path, [data], tiny_tokenizer_dir, **options)
    assert first["tasks"]["pass1:ran"] >= 3 and first["tasks"]["plan:ran"] >= 1, first["tasks"]
    written = out.with_suffix(".bin").read_bytes()
    # A flipped byte in a finished shard (W07), a truncated pass-2 shard (W08), a truncated band
    # file (W10), a missing spill file and a FIFO in place of pairs, each of another task; an
    # empty and an edited marker (W06).
    flip(sorted((work / "shards").glob("shard-*.bin"))[-1])
    token_file = sorted(work.glob("s00163*.tok.npy"))[0]
    token_file.write_bytes(token_file.read_bytes()[:-8])
    band = work / "dedup" / "bands" / "p1-0000000.npy"
    band.write_bytes(band.read_bytes()[:100])
    (work / "spill" / "r0000002").unlink()  # a missing file, and one that became a FIFO
    (work / "dedup" / "verified" / "v00000.npy").unlink()
    os.mkfifo(work / "dedup" / "verified" / "v00000.npy")
    (work / "done" / "components-00001.json").write_bytes(b"")
    edited = work / "done" / "pass1-0000001.json"  # still JSON, but not what was written
    edited.write_bytes(edited.read_bytes().replace(b'"files":{', b'"files":{"x":[1,"y"],'))
    again = run(tmp_path, [data], tiny_tokenizer_dir, **options)
    assert out.with_suffix(".bin").read_bytes() == written
    tasks = again["tasks"]
    assert tasks["redone:bad_files"] == 5 and tasks["redone:bad_marker"] == 2, tasks
    redone = {k: n for k, n in tasks.items() if k.endswith(":ran")}
    assert redone == {
        "pass1:ran": 3,
        "pass2:ran": 1,
        "verify:ran": 1,
        "components:ran": 1,
        "finalize:ran": 1,
    }
    third = run(tmp_path, [data], tiny_tokenizer_dir, **options)  # all intact again
    assert not any(k.endswith(":ran") or k.startswith("redone") for k in third["tasks"])

    shutil.move(work, tmp_path / "moved")  # a kept directory moves (no absolute path inside)
    options["work_dir"] = str(tmp_path / "moved")
    for marker in (tmp_path / "moved" / "done").glob("pass2-*.json"):
        marker.unlink()  # pass 2 reads the regions pass 2a planned
    run(tmp_path, [data], tiny_tokenizer_dir, **options)
    assert out.with_suffix(".bin").read_bytes() == written

    with data.open("a") as f:  # W04: an input changed under the kept directory
        f.write(json.dumps({"text": "x = 1\n", "repo": "new", "path": "n.py"}) + "\n")
    with pytest.raises(WorkDirError, match=r"in\.jsonl changed \(size \d+ -> \d+ bytes, modif"):
        run(tmp_path, [data], tiny_tokenizer_dir, **options)


def test_changed_checkout_file_or_tokenizer_is_refused(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    checkout = tmp_path / "checkout"
    for n, text in enumerate(stdlib_texts()[:4]):
        (checkout / f"repo{n}").mkdir(parents=True)
        (checkout / f"repo{n}" / "mod.py").write_text(text)
    tok = Path(shutil.copytree(tiny_tokenizer_dir, tmp_path / "tok"))
    options = {"work_dir": str(tmp_path / "work"), "repos_per_task": 2}
    run(tmp_path, [checkout], tok, **options)
    (checkout / "repo4").mkdir()
    with pytest.raises(WorkDirError, match=r"repositories of input .*checkout changed \(4 -> 5"):
        run(tmp_path, [checkout], tok, **options)
    (checkout / "repo4").rmdir()
    (checkout / "repo3" / "mod.py").write_text("x = 1\n")  # read by the third pass-1 task
    with pytest.raises(
        WorkDirError, match=r"input .*checkout: repository repo3 changed since task pass1-0000002"
    ):
        run(tmp_path, [checkout], tok, **options)
    (tok / "tokenizer.json").write_text((tok / "tokenizer.json").read_text() + "\n")
    with pytest.raises(WorkDirError, match="the tokenizer's tokenizer.json changed"):
        run(tmp_path, [checkout], tok, **options)
