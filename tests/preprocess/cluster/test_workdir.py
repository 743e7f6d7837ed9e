"""The work directory: a kept one refuses a second run and other options, and sheds what killed
attempts left."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_dscoder.preprocess.cluster.workdir import WorkDir, WorkDirError


def test_kept_directory_is_locked_stamped_and_swept(tmp_path: Path) -> None:
    work = WorkDir.keep(str(tmp_path / "w"), {"seed": 1})
    with pytest.raises(WorkDirError, match="another run"):
        WorkDir.keep(str(tmp_path / "w"), {"seed": 1})
    root = Path(work.path)
    (root / "spill" / "r0000003.tmp-abc").mkdir(parents=True)
    (root / "spill" / "r0000003.tmp-abc" / "00001").write_bytes(b"x")
    (root / "dedup" / "b007.tmp-q1").mkdir(parents=True)
    (root / "dedup" / "pairs-1.npy.4242.partial").write_bytes(b"half")
    (root / "dedup" / "pairs-1.npy").write_bytes(b"whole")
    (root / "done").mkdir()
    (root / "done" / "pass1-0000000.json").write_text("{}")
    assert work.sweep_temporaries() == 3
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == [".owner", "dedup/pairs-1.npy", "done/pass1-0000000.json", "run.json"]
    work.remove()
    assert root.exists(), "a kept directory stays"
    with pytest.raises(WorkDirError):
        WorkDir.keep(str(tmp_path / "w"), {"seed": 2})  # other options: refused
