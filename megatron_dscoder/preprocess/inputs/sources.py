"""Input discovery and partitioning: turn ``--input`` paths into small, ordered tasks.

Three kinds of input are accepted:

- JSONL, plain or compressed (``.gz``, ``.zst``/``.zstd``): one record per line. The reader
  streams the file (decompressing on the fly) and cuts it into blobs of complete lines of about
  ``blob_bytes``; a line longer than ``max_record_bytes`` is skipped *while streaming*, without
  ever being held in memory, and counted as ``record_too_large``.
- Parquet (``.parquet``): one task per row group, read by the worker itself.
- A directory whose subdirectories are repository checkouts: one task per batch of files of
  one repository (files directly inside the directory form a repository named after it).

A missing input is an error (:func:`check_inputs`, before any work), never a smaller corpus.
Tasks are produced in a deterministic order (inputs in the order given, directory entries
sorted) and do not depend on the worker count, which is what makes the output byte-identical
for any ``--workers``. Workers turn tasks into records with :mod:`.readers`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from megatron_dscoder.config.inputs import InputError
from megatron_dscoder.preprocess.inputs.compression import is_zstd, open_compressed, zstd_complete
from megatron_dscoder.preprocess.records import language_of

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
#: Typical expansion of compressed input, used only to size the repository partitions.
COMPRESSION_RATIO = {".gz": 4.0, ".zst": 5.0, ".zstd": 5.0, ".parquet": 4.0, ".pq": 4.0}


@dataclass(frozen=True)
class JsonlBlob:
    """Complete JSONL lines cut from one input file."""

    source: str
    blob: bytes
    input_bytes: int


@dataclass(frozen=True)
class ParquetRowGroup:
    """One row group of a Parquet file."""

    source: str
    row_group: int
    input_bytes: int


@dataclass(frozen=True)
class RepoFiles:
    """A batch of files from one repository checkout (paths relative to ``root``)."""

    source: str
    repo: str
    root: str
    paths: tuple[str, ...]
    input_bytes: int


InputChunk = JsonlBlob | ParquetRowGroup | RepoFiles


def input_kind(path: str) -> str:
    """'dir', 'parquet' or 'jsonl' (anything else is read as JSONL)."""
    if os.path.isdir(path):
        return "dir"
    if path.lower().endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "jsonl"


def file_size(path: str) -> int:
    """The size of ``path``, 0 if it can not be read (counted where it is opened)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def iter_line_blobs(
    stream: BinaryIO, blob_bytes: int, max_line_bytes: int, on_oversize: Callable[[], None]
) -> Iterator[bytes]:
    """Yield blobs of complete lines (each about ``blob_bytes``) from a binary stream.

    Memory stays below ``blob_bytes + max_line_bytes + 1 MiB`` whatever the input: a line that
    grows past ``max_line_bytes`` is dropped while it streams past (``on_oversize`` is called
    once for it). A final line without a newline is still yielded.
    """
    block = max(1 << 16, min(1 << 20, blob_bytes))
    pending: list[bytes] = []
    pending_size = 0
    tail = 0  # bytes of the unfinished line at the end of ``pending``
    skipping = False
    while data := stream.read(block):
        if skipping:
            newline = data.find(b"\n")
            if newline < 0:
                continue
            skipping = False
            data = data[newline + 1 :]
        newline = data.rfind(b"\n")
        tail = tail + len(data) if newline < 0 else len(data) - newline - 1
        pending.append(data)
        pending_size += len(data)
        if tail > max_line_bytes:
            if pending_size > tail:
                yield b"".join(pending)[: pending_size - tail]
            on_oversize()
            pending, pending_size, tail, skipping = [], 0, 0, True
        elif pending_size >= blob_bytes and pending_size > tail:
            buffer = b"".join(pending)
            cut = pending_size - tail
            yield buffer[:cut]
            pending, pending_size = ([buffer[cut:]] if tail else []), tail
    if pending_size:
        yield b"".join(pending)


def jsonl_chunks(
    path: str, blob_bytes: int, max_record_bytes: int, bad: Counter[str]
) -> Iterator[JsonlBlob]:
    """Tasks for one JSONL file; unreadable or corrupt files are counted, never raised."""
    try:
        stream, raw = open_compressed(path)
    except OSError as err:
        logger.warning("skipping unreadable input %s: %s", path, err)
        bad["unreadable_file"] += 1
        return
    position = 0
    emitted = False
    try:
        with raw, stream:
            blobs = iter_line_blobs(
                stream, blob_bytes, max_record_bytes, lambda: bad.update(["record_too_large"])
            )
            for blob in blobs:
                now = raw.tell()
                emitted = True
                yield JsonlBlob(path, blob, now - position)
                position = now
    except Exception as err:  # truncated or corrupt compressed stream (gzip, zstd errors)
        logger.warning("input %s is corrupt after %d bytes: %s", path, position, err)
        bad["unreadable_file"] += 1
        return
    if is_zstd(path) and not zstd_complete(path):
        logger.warning("input %s is truncated; its readable part was used", path)
        bad["unreadable_file"] += 1
    elif not emitted:
        bad["empty_file"] += 1


def parquet_chunks(path: str, bad: Counter[str]) -> Iterator[ParquetRowGroup]:
    """One task per row group of a Parquet file."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as err:  # pyarrow raises several types for bad files
        logger.warning("skipping unreadable Parquet input %s: %s", path, err)
        bad["unreadable_file"] += 1
        return
    if meta.num_row_groups == 0:
        bad["empty_file"] += 1
    for i in range(meta.num_row_groups):
        yield ParquetRowGroup(path, i, meta.row_group(i).total_byte_size)


def repo_dir_chunks(
    root: str, batch_bytes: int, max_record_bytes: int, bad: Counter[str], skipped: Counter[str]
) -> Iterator[RepoFiles]:
    """Tasks for a directory of repository checkouts; hidden directories (``.git``) are skipped."""
    for repo in list_repositories(root):
        yield from repo_chunks(root, repo, batch_bytes, max_record_bytes, bad, skipped)


def list_repositories(root: str) -> list[str]:
    """The repositories of a checkout directory, in order: ``""`` (its loose files), then each
    visible subdirectory by name (names only: one directory listing, no file is opened)."""
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    return [""] + [
        e.name for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
    ]


def repo_chunks(
    root: str,
    repo: str,
    batch_bytes: int,
    max_record_bytes: int,
    bad: Counter[str],
    skipped: Counter[str],
) -> Iterator[RepoFiles]:
    """Batches of files of one repository of ``root`` (``""``: the loose files of ``root``,
    a repository named after it)."""
    top = Path(root)
    name, repo_root = (repo, top / repo) if repo else (top.name, top)
    files = regular_files(repo_root, skipped, recursive=bool(repo))
    batch: list[str] = []
    size = 0
    for rel in files:
        nbytes = file_size(str(repo_root / rel))
        if not language_of("", rel):
            skipped["unknown_language"] += 1
            continue
        if nbytes > max_record_bytes:
            bad["record_too_large"] += 1
            continue
        batch.append(rel)
        size += nbytes
        if size >= batch_bytes:
            yield RepoFiles(root, name, str(repo_root), tuple(batch), size)
            batch, size = [], 0
    if batch:
        yield RepoFiles(root, name, str(repo_root), tuple(batch), size)


def regular_files(repo_root: Path, skipped: Counter[str], recursive: bool = True) -> list[str]:
    """The regular files of a repository (``/``-separated paths relative to it, sorted; hidden
    directories such as ``.git`` left out). Only regular files are kept, judged by ``lstat``
    and never opened: a FIFO blocks its reader forever, a device or socket is no source file,
    and a symbolic link may leave the checkout. Those are counted in ``skipped`` by reason
    (``symlink``, ``not_regular_file``)."""
    out = []
    for dirpath, dirs, files in os.walk(repo_root):
        if not recursive:
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, repo_root)
        for name in sorted(files):
            try:
                mode = os.lstat(os.path.join(dirpath, name)).st_mode
            except OSError:
                skipped["unreadable_file"] += 1
                continue
            if stat.S_ISREG(mode):
                out.append(name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/"))
            else:
                skipped["symlink" if stat.S_ISLNK(mode) else "not_regular_file"] += 1
    return out


def check_inputs(paths: list[str], text_names: tuple[str, ...]) -> None:
    """Refuse, before any work, an input that does not exist or a Parquet file without text.

    A misspelt path must not silently yield part of the corpus; a Parquet file whose schema has
    none of the text column names would otherwise yield no documents at all.
    """
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"--input {path}: no such file or directory")
        if not os.path.isdir(path) and not os.path.isfile(path):  # a FIFO would block forever
            raise InputError(f"--input {path}: not a regular file or a directory")
        if not os.access(path, os.R_OK):
            raise InputError(f"--input {path}: permission denied")
        if input_kind(path) == "parquet":
            columns = _parquet_columns(path)
            if columns is not None and not any(name in columns for name in text_names):
                raise InputError(
                    f"--input {path}: no text column (looked for {', '.join(text_names)}; "
                    f"name it with --text-field); columns found: {', '.join(columns) or 'none'}"
                )


def _parquet_columns(path: str) -> list[str] | None:
    """Column names of a Parquet file (None if unreadable: counted later, per row group)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception:  # pyarrow raises several types for bad files
        return None


def iter_chunks(
    inputs: list[str],
    blob_bytes: int,
    max_record_bytes: int,
    bad: Counter[str],
    skipped: Counter[str] | None = None,
) -> Iterator[InputChunk]:
    """All tasks of all inputs, in a deterministic order.

    Bad inputs are counted in ``bad``; files of checkouts in no known language in ``skipped``.
    """
    skipped = Counter() if skipped is None else skipped
    for path in inputs:
        if not os.path.exists(path):  # checked up front (check_inputs); vanished since
            raise InputError(f"--input {path}: no such file or directory")
        kind = input_kind(path)
        if kind == "dir":
            yield from repo_dir_chunks(path, blob_bytes, max_record_bytes, bad, skipped)
        elif kind == "parquet":
            yield from parquet_chunks(path, bad)
        else:
            yield from jsonl_chunks(path, blob_bytes, max_record_bytes, bad)
