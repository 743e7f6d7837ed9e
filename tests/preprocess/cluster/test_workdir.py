"""The work directory: a kept one refuses a second run and other options, and sheds what killed
attempts left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from megatron_dscoder.preprocess.cluster.workdir import WorkDir, WorkDirError
from tests.tools.test_tool_preprocess_data import load_tool, make_corpus
from tests.tools.test_tool_preprocess_failures import FAST, _try_tmpfs


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


def test_sweep_takes_dead_temporary_directories_only(tmp_path: Path) -> None:
    """A kept --work-dir named like a temporary one (W13) survives the next run's sweep; a dead
    run's temporary directory does not, nor an empty unmarked one a minute old."""
    kept = WorkDir.keep(str(tmp_path / "data.work-resume"), {"seed": 1})
    (Path(kept.path) / "done").mkdir()
    kept.remove()  # unlocked between runs: exactly when it matters
    dead = WorkDir.create(str(tmp_path), "data")
    os.close(dead._fd)  # its run died: the lock is gone, the directory stays
    empty_old = tmp_path / "data.work-empty"
    empty_old.mkdir()
    os.utime(empty_old, (0, 0))
    live = WorkDir.create(str(tmp_path), "data")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["data.work-resume", os.path.basename(live.path)])
    assert (tmp_path / "data.work-resume" / "run.json").exists()
    live.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.work-resume"]


def test_keep_refuses_what_is_not_a_work_directory(tmp_path: Path) -> None:
    temporary = WorkDir.create(str(tmp_path), "data")
    with pytest.raises(WorkDirError, match="the temporary work directory of another run"):
        WorkDir.keep(temporary.path, {"seed": 1})
    temporary.remove()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt.partial").write_text("a user's file")
    with pytest.raises(WorkDirError, match="src: not empty and not a work directory"):
        WorkDir.keep(str(tmp_path / "src"), {"seed": 1})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WorkDirError, match="afile: not a directory"):
        WorkDir.keep(str(tmp_path / "afile"), {"seed": 1})
    stamped = WorkDir.keep(str(tmp_path / "w"), {"layout": 3, "seed": 1})
    stamped.remove()
    (tmp_path / "w" / "run.json").write_text("{trunc")
    with pytest.raises(WorkDirError, match=r"run.json: unreadable"):
        WorkDir.keep(str(tmp_path / "w"), {"layout": 3, "seed": 1})


def test_a_full_work_dir_names_it(
    tmp_path: Path, tiny_tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full work-dir disk was reported as the output directory's: the line names the work
    directory (or its file) whose write failed (a real 64 KiB tmpfs)."""
    work = tmp_path / "disk"
    if not _try_tmpfs(work, "64k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        corpus = make_corpus(tmp_path / "in.jsonl", 3000)
        argv = ["--input", str(corpus), "--tokenizer-model", str(tiny_tokenizer_dir)]
        argv += ["--output-prefix", str(tmp_path / "out" / "code"), "--workers", "1"]
        assert load_tool().main([*argv, "--work-dir", str(work / "w"), *FAST]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: no space left on device ({work}/w")
    finally:
        subprocess.run(["umount", str(work)], check=True)
