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

Inputs are planned by a pool of threads (a shared file system answers many small requests
at once far faster than in turn): file sizes, Parquet footers and directory listings. A
checkout directory is listed once (its repository names); its text size, which only sizes
the repository shuffle and the progress bar, is estimated from :data:`SIZE_SAMPLE` evenly
spaced repositories walked in parallel (all of them when there are fewer), never by walking
the whole tree on the driver: the workers walk the repositories.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from megatron_dscoder.preprocess.inputs.sources import (
    COMPRESSION_RATIO,
    InputChunk,
    JsonlBlob,
    ParquetRowGroup,
    file_size,
    input_kind,
    iter_line_blobs,
    jsonl_chunks,
    list_repositories,
    parquet_chunks,
    repo_chunks,
)
from megatron_dscoder.preprocess.records import language_of

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


#: Repositories walked to estimate the text size of a checkout directory.
SIZE_SAMPLE = 64
#: Threads listing, sizing and reading footers on the driver.
PLAN_THREADS = 16


def _pool(items: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, min(PLAN_THREADS, items)), thread_name_prefix="plan")


@lru_cache(maxsize=16)
def repositories(root: str) -> tuple[str, ...]:
    """:func:`.sources.list_repositories`, cached: a directory is listed once however often the
    driver plans in it (``run_pipeline`` clears the cache when a run starts)."""
    return tuple(list_repositories(root))


def _repo_text_bytes(root: str, repo: str) -> int:
    """Bytes of the files of a known language in one repository (``""``: the loose files)."""
    if not repo:
        with os.scandir(root) as entries:
            files = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        return sum(file_size(os.path.join(root, f)) for f in files if language_of("", f))
    total = 0
    for top, dirs, files in os.walk(os.path.join(root, repo)):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        total += sum(file_size(os.path.join(top, f)) for f in files if language_of("", f))
    return total


def _dir_text_bytes(root: str) -> int:
    repos = repositories(root)
    picks = repos
    if len(repos) > SIZE_SAMPLE:
        picks = tuple(repos[i * len(repos) // SIZE_SAMPLE] for i in range(SIZE_SAMPLE))
    with _pool(len(picks)) as pool:
        sizes = list(pool.map(_repo_text_bytes, [root] * len(picks), picks))
    return sum(sizes) * len(repos) // len(picks)


def input_sizes(inputs: tuple[str, ...]) -> tuple[int, int]:
    """(estimated text bytes, bytes the progress bar counts) of all inputs: on-disk sizes of
    files (compressed ones scaled by their usual ratio for the first), text of directories."""

    def sizes(path: str) -> tuple[int, int]:
        if os.path.isdir(path):
            text = _dir_text_bytes(path)
            return text, text
        ratio = next((r for s, r in COMPRESSION_RATIO.items() if path.lower().endswith(s)), 1.0)
        size = file_size(path)
        return int(size * ratio), size

    with _pool(len(inputs)) as pool:
        both = list(pool.map(sizes, inputs))
    return sum(t for t, _ in both), sum(d for _, d in both)


def _refs_of(path: str, partition_bytes: int, repos_per_task: int) -> tuple[list, Counter[str]]:
    bad: Counter[str] = Counter()
    kind = input_kind(path)
    if kind == "dir":
        repos = repositories(path)
        refs: list[InputRef] = [
            RepoDirs(path, repos[i : i + repos_per_task])
            for i in range(0, len(repos), repos_per_task)
        ]
    elif kind == "parquet":
        refs = list(parquet_chunks(path, bad))  # reads the footer only
    elif path.lower().endswith((".gz", ".zst", ".zstd")):
        refs = [JsonlFile(path)]
    else:
        size = os.path.getsize(path)
        if size == 0:
            bad["empty_file"] += 1
        refs = [
            JsonlRange(path, start, min(size, start + partition_bytes))
            for start in range(0, size, partition_bytes)
        ]
    return refs, bad


def plan_refs(
    inputs: tuple[str, ...], partition_bytes: int, repos_per_task: int, bad: Counter[str]
) -> list[InputRef]:
    """The references of all inputs, in input order (sizes, names and footers only)."""
    with _pool(len(inputs)) as pool:
        planned = list(
            pool.map(
                _refs_of, inputs, [partition_bytes] * len(inputs), [repos_per_task] * len(inputs)
            )
        )
    refs: list[InputRef] = []
    for found, counts in planned:
        refs += found
        bad.update(counts)
    return refs


def expand(
    ref: InputRef,
    task_bytes: int,
    max_record_bytes: int,
    bad: Counter[str],
    skipped: Counter[str],
) -> Iterator[InputChunk]:
    """The small tasks of one reference, read by the worker (see the module docstring)."""
    if isinstance(ref, RepoDirs):
        for repo in ref.repos:
            yield from repo_chunks(ref.source, repo, task_bytes, max_record_bytes, bad, skipped)
    elif isinstance(ref, ParquetRowGroup):
        yield ref
    elif isinstance(ref, JsonlFile):
        yield from jsonl_chunks(ref.source, task_bytes, max_record_bytes, bad)
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
