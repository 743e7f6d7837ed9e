"""The run's output at a prefix is what the last run wrote: one pair or parts with a manifest,
never an earlier run's other form left beside it (a training script naming it would read stale
data), and never parts the manifest does not list."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from megatron_dscoder.data.manifest import verify_manifest
from tests.preprocess.preprocess_helpers import run

SMALL = {"partition_mb": 0.01, "task_bytes": 8 << 10}
"""Several shards from a few files."""


def test_a_rerun_removes_the_other_form(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    std = Path(sysconfig.get_paths()["stdlib"])
    corpus = tmp_path / "code.jsonl"
    with open(corpus, "w") as f:
        for name in ("json/decoder.py", "json/encoder.py", "json/scanner.py", "json/tool.py"):
            f.write(json.dumps({"text": (std / name).read_text(), "path": name}) + "\n")
    prefix = tmp_path / "out" / "data"
    parts = Path(f"{prefix}.parts")

    def write(shard_mb: float) -> None:
        run(
            tmp_path, [corpus], tiny_tokenizer_dir, prefix=prefix, output_shard_mb=shard_mb, **SMALL
        )

    write(0)
    parts.mkdir()
    for stale in ("part-00099.bin", "part-00099.idx", "notes.txt"):  # an older run's; the user's
        (parts / stale).write_text("")
    write(1e-6)  # one part per shard
    assert not Path(f"{prefix}.bin").exists() and not Path(f"{prefix}.idx").exists()
    listed = verify_manifest(str(parts / "manifest.json"), full=True).parts
    assert len(listed) > 1
    assert sorted(p.name for p in parts.iterdir()) == sorted(
        ["manifest.json", "notes.txt"] + [p.prefix + s for p in listed for s in (".bin", ".idx")]
    )
    write(0)
    assert sorted(p.name for p in parts.iterdir()) == ["notes.txt"]
    assert Path(f"{prefix}.bin").exists()
