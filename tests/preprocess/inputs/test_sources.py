"""Input discovery and streaming: blobs of whole lines, compressed files, Parquet, checkouts."""

from __future__ import annotations

import io
import os
import socket
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_dscoder.preprocess.inputs.sources import (
    InputError,
    JsonlBlob,
    ParquetRowGroup,
    RepoFiles,
    iter_chunks,
    iter_line_blobs,
)
from tests.preprocess.preprocess_helpers import write_jsonl


class LazyHugeLine(io.RawIOBase):
    """A stream of: one valid line, a 100 MB line, one valid line; generated on the fly."""

    def __init__(self, huge: int = 100 << 20) -> None:
        self.parts = [b'{"text": "first"}\n', b"x" * (1 << 20)]
        self.remaining = huge
        self.tail = b'\n{"text": "last"}\n'

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.parts[0] is not None and self.parts[0].startswith(b"{"):
            return self.parts.pop(0)
        if self.remaining > 0:
            self.remaining -= 1 << 20
            return self.parts[0]
        out, self.tail = self.tail, b""
        return out


def test_a_100mb_line_streams_past_in_bounded_memory() -> None:
    oversize: list[int] = []
    tracemalloc.start()
    try:
        blobs = list(iter_line_blobs(LazyHugeLine(), 1 << 20, 4 << 20, lambda: oversize.append(1)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b"".join(blobs) == b'{"text": "first"}\n{"text": "last"}\n'
    assert oversize == [1]
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_blobs_are_whole_lines_and_lossless() -> None:
    data = b"".join(b"line %d %s\n" % (i, b"y" * (i % 97)) for i in range(5000)) + b"no newline"
    blobs = list(iter_line_blobs(io.BytesIO(data), 4096, 1 << 20, lambda: None))
    assert b"".join(blobs) == data
    assert all(b.endswith(b"\n") for b in blobs[:-1]) and len(blobs) > 3


def test_jsonl_plain_gz_zst_give_the_same_blobs(tmp_path: Path) -> None:
    records = [{"text": f"print({i})\n", "repo": "r", "path": f"{i}.py"} for i in range(100)]
    blobs = {}
    for suffix in (".jsonl", ".gz", ".zst"):
        path = write_jsonl(tmp_path / f"in{suffix}", records)
        tasks = list(iter_chunks([str(path)], 1 << 20, 1 << 20, Counter()))
        assert all(isinstance(t, JsonlBlob) for t in tasks)
        blobs[suffix] = b"".join(t.blob for t in tasks)
        assert sum(t.input_bytes for t in tasks) == path.stat().st_size
    assert blobs[".jsonl"] == blobs[".gz"] == blobs[".zst"]


def test_truncated_zst_counts_unreadable_but_keeps_earlier_lines(tmp_path: Path) -> None:
    records = [{"text": "x" * 100 + str(i)} for i in range(2000)]
    path = write_jsonl(tmp_path / "in.zst", records)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    bad: Counter[str] = Counter()
    list(iter_chunks([str(path)], 1 << 20, 1 << 20, bad))
    assert bad == Counter(unreadable_file=1)
    with pytest.raises(InputError, match="missing.jsonl: no such file"):  # never a smaller corpus
        list(iter_chunks([str(tmp_path / "missing.jsonl")], 1 << 20, 1 << 20, bad))


def test_parquet_one_task_per_row_group(tmp_path: Path) -> None:
    table = pa.table({"content": [f"x = {i}\n" for i in range(10)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=4)
    tasks = list(iter_chunks([str(tmp_path / "t.parquet")], 1 << 20, 1 << 20, Counter()))
    assert [t.row_group for t in tasks if isinstance(t, ParquetRowGroup)] == [0, 1, 2]


def test_checkout_directory_tasks(tmp_path: Path) -> None:
    for rel in (
        "alpha/src/a.py",
        "alpha/src/b.py",
        "alpha/.git/config",
        "beta/main.c",
        "beta/logo.png",
        "loose.py",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("pass\n")
    skipped: Counter[str] = Counter()
    tasks = list(iter_chunks([str(tmp_path)], 1 << 20, 1 << 20, Counter(), skipped))
    assert all(isinstance(t, RepoFiles) for t in tasks)
    assert [(t.repo, t.paths) for t in tasks] == [
        (tmp_path.name, ("loose.py",)),
        ("alpha", ("src/a.py", "src/b.py")),
        ("beta", ("main.c",)),
    ]
    assert skipped == Counter(unknown_language=1)


def test_checkout_keeps_regular_files_only(tmp_path: Path) -> None:
    """A FIFO named like source blocked a worker forever: every non-regular file is skipped
    unopened and counted by reason."""
    repo = tmp_path / "r1"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("pass\n")
    (tmp_path / "loose.py").write_text("pass\n")
    os.mkfifo(repo / "pipe.py")
    os.mkfifo(tmp_path / "loose_pipe.py")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(repo / "pkg" / "sock.py"))
        (repo / "link.py").symlink_to(repo / "pkg" / "a.py")
        skipped: Counter[str] = Counter()
        tasks = list(iter_chunks([str(tmp_path)], 1 << 20, 1 << 20, Counter(), skipped))
    assert [(t.repo, t.paths) for t in tasks] == [
        (tmp_path.name, ("loose.py",)),
        ("r1", ("pkg/a.py",)),
    ]
    assert skipped == Counter(not_regular_file=3, symlink=1)
