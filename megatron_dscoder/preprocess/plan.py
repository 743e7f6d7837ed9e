"""Work planned by reference: the driver names pieces of the input, the workers read them.

The driver never opens a corpus file's content. It plans *input references* from file sizes,
directory names and Parquet footers only:

``JsonlRange``   a byte range ``[start, end)`` of a plain JSONL file (``partition_bytes`` each);
                 the worker reads the lines that *start* in the range (the line cut at
                 ``start`` belongs to the range before), so the ranges cover every line once.
``JsonlFile``    a whole compressed JSONL file (``.gz``/``.zst`` cannot be entered in the
                 middle): the worker decompresses it as a stream.
``ParquetRowGroup``  one row group of a Parquet file (:mod:`.sources`).
``RepoDirs``     up to ``repos_per_task`` repository directories of one checkout directory
                 (names from one directory listing); the worker walks them.

A worker expands its reference (:func:`expand`) into the same small tasks as before
(:class:`.sources.JsonlBlob` of about ``task_bytes``, :class:`.sources.RepoFiles`), each of
which becomes one shard, numbered ``ref * CHUNKS_PER_REF + chunk``: numbers increase in
input order, which keeps the output order, the sample ids of the dedup and therefore the
output bytes independent of how the input was cut.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from megatron_dscoder.preprocess.sources import (
    JsonlBlob,
    ParquetRowGroup,
    Task,
    input_kind,
    iter_line_blobs,
    jsonl_tasks,
    list_repositories,
    parquet_tasks,
    repo_tasks,
)

#: Shards one reference may produce (``task_bytes`` each: 16 GiB of JSONL with 4 MiB tasks).
CHUNKS_PER_REF = 1 << 12
#: References a run may have (shard numbers stay below 2**32, the dedup's sample-id layout).
MAX_REFS = (1 << 32) // CHUNKS_PER_REF // 2


@dataclass(frozen=True)
class JsonlRange:
    source: str
    start: int
    end: int


@dataclass(frozen=True)
class JsonlFile:
    source: str


@dataclass(frozen=True)
class RepoDirs:
    source: str
    repos: tuple[str, ...]


InputRef = JsonlRange | JsonlFile | ParquetRowGroup | RepoDirs


def plan_refs(
    inputs: tuple[str, ...], partition_bytes: int, repos_per_task: int, bad: Counter[str]
) -> Iterator[InputRef]:
    """The references of all inputs, in input order (sizes and names only)."""
    for path in inputs:
        kind = input_kind(path)
        if kind == "dir":
            repos = list_repositories(path)
            for i in range(0, len(repos), repos_per_task):
                yield RepoDirs(path, tuple(repos[i : i + repos_per_task]))
        elif kind == "parquet":
            yield from parquet_tasks(path, bad)  # reads the footer only
        elif path.lower().endswith((".gz", ".zst", ".zstd")):
            yield JsonlFile(path)
        else:
            size = os.path.getsize(path)
            if size == 0:
                bad["empty_file"] += 1
            for start in range(0, size, partition_bytes):
                yield JsonlRange(path, start, min(size, start + partition_bytes))


def expand(
    ref: InputRef,
    task_bytes: int,
    max_record_bytes: int,
    bad: Counter[str],
    skipped: Counter[str],
) -> Iterator[Task]:
    """The small tasks of one reference, read by the worker (see the module docstring)."""
    if isinstance(ref, RepoDirs):
        for repo in ref.repos:
            yield from repo_tasks(ref.source, repo, task_bytes, max_record_bytes, bad, skipped)
    elif isinstance(ref, ParquetRowGroup):
        yield ref
    elif isinstance(ref, JsonlFile):
        yield from jsonl_tasks(ref.source, task_bytes, max_record_bytes, bad)
    else:
        yield from _range_blobs(ref, task_bytes, max_record_bytes, bad)


def _line_start_at_or_after(f: BinaryIO, position: int) -> int:
    """The offset of the first line that starts at or after ``position``."""
    if position == 0:
        return 0
    f.seek(position - 1)
    while block := f.read(1 << 16):
        newline = block.find(b"\n")
        if newline >= 0:
            return f.tell() - len(block) + newline + 1
    return f.tell()


class _Window:
    """A read-only view of ``[start, end)`` of an open file, for :func:`iter_line_blobs`."""

    def __init__(self, f: BinaryIO, start: int, end: int) -> None:
        self.f, self.left = f, end - start
        f.seek(start)

    def read(self, size: int) -> bytes:
        data = self.f.read(min(size, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


def _range_blobs(
    ref: JsonlRange, task_bytes: int, max_record_bytes: int, bad: Counter[str]
) -> Iterator[JsonlBlob]:
    try:
        f = open(ref.source, "rb")
    except OSError:
        bad["unreadable_file"] += 1
        return
    with f:
        start = _line_start_at_or_after(f, ref.start)
        end = _line_start_at_or_after(f, ref.end)
        if end <= start:
            return
        position = start
        window = _Window(f, start, end)
        oversize = lambda: bad.update(["record_too_large"])  # noqa: E731
        for blob in iter_line_blobs(window, task_bytes, max_record_bytes, oversize):  # type: ignore[arg-type]
            consumed = end - start - window.left
            yield JsonlBlob(ref.source, blob, start + consumed - position)
            position = start + consumed
