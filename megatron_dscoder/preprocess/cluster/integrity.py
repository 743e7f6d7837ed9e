"""Checksums of work files, and the state of the inputs a kept work directory was made from.

A rerun with ``--work-dir`` reuses what finished tasks wrote, so it must be able to tell that
those files are still what the tasks wrote, and that the inputs are still those they read:

- Every file a task writes is digested (BLAKE2b, 128 bits) while it is written
  (:func:`.layout.atomic_write` feeds :class:`HashingWriter`), or read back once right after
  for files another writer made (:func:`record_files`); :func:`recording` collects them for the
  task's completion marker. :func:`check_files` compares a file with its digest when the marker
  is reused; a mismatch (a flipped byte, a truncated or missing file) makes the task run again.
- Each input's size and modification time (nanoseconds), the repository names of a checkout
  directory and the tokenizer's file digests are the run's :func:`input_state`, kept in
  ``run.json``; the repositories a pass-1 task walked are summed up in its marker
  (:func:`repos_state`). A content hash of terabytes of input would cost as much as the run.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from megatron_dscoder.preprocess.inputs.plan import repositories
from megatron_dscoder.preprocess.inputs.sources import regular_files
from megatron_dscoder.preprocess.records import language_of

#: Bytes of a digest (hex: twice as many characters).
DIGEST_BYTES = 16
BLOCK = 1 << 20
#: The tokenizer files that decide the tokens (a model directory's weights are not hashed).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)

#: Files written by the running task (path -> [size, digest]); None outside :func:`recording`.
_recorded: dict[str, list[Any]] | None = None


def new_hash() -> Any:
    return hashlib.blake2b(digest_size=DIGEST_BYTES)


class HashingWriter:
    """A binary file that digests what is written through it (``write``, ``tell``)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.hash, self.size = f, new_hash(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += view.nbytes
        return self.f.write(view)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        self.f.flush()


def file_digest(path: str) -> list[Any]:
    """[size, hex digest] of a file, read in 1 MiB blocks."""
    digest, size = new_hash(), 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return [size, digest.hexdigest()]


@contextmanager
def recording() -> Iterator[dict[str, list[Any]]]:
    """Collect ``path -> [size, digest]`` of every file written in this process meanwhile."""
    global _recorded
    outer, _recorded = _recorded, {}
    try:
        yield _recorded
    finally:
        _recorded = outer


def record(path: str, size: int, digest: str) -> None:
    """Note a complete file (no-op outside :func:`recording`)."""
    if _recorded is not None:
        _recorded[os.path.abspath(path)] = [size, digest]


def record_files(paths: list[str]) -> None:
    """Digest files another writer made (read back once, while the page cache holds them)."""
    if _recorded is not None:
        for path in paths:
            _recorded[os.path.abspath(path)] = file_digest(path)


def relative_files(work_dir: str, recorded: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``recorded`` keyed by paths relative to the work directory, sorted."""
    return {os.path.relpath(p, work_dir): recorded[p] for p in sorted(recorded)}


def check_files(work_dir: str, files: dict[str, list[Any]]) -> str | None:
    """None if every file matches its [size, digest], else what differs (naming the file)."""
    for rel, (size, digest) in files.items():
        path = os.path.join(work_dir, rel)
        try:
            info = os.lstat(path)
        except OSError:
            return f"{path} is missing"
        if not stat.S_ISREG(info.st_mode):  # never opened: a FIFO would block
            return f"{path} is not a regular file"
        if (actual := info.st_size) != size:
            return f"{path} has {actual} bytes, {size} when written"
        if file_digest(path)[1] != digest:
            return f"{path} does not match its checksum"
    return None


def _stat(path: str) -> dict[str, int]:
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _names_digest(names: tuple[str, ...]) -> str:
    digest = new_hash()
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def input_state(inputs: tuple[str, ...], tokenizer: str) -> dict[str, Any]:
    """What a kept work directory's results were made from: per input file its size and
    mtime, per checkout directory its repository names (a digest; the files are checked per
    pass-1 task), and the digests of the tokenizer's files."""
    state: dict[str, Any] = {}
    for path in inputs:
        if os.path.isdir(path):
            names = repositories(path)
            state[path] = {"repositories": len(names) - 1, "names": _names_digest(names)}
        else:
            state[path] = _stat(path)
    return {"inputs": state, "tokenizer": tokenizer_digests(tokenizer)}


def tokenizer_digests(path: str) -> dict[str, str]:
    """Digests of a tokenizer file, or of the tokenizer files of a directory."""
    if os.path.isfile(path):
        return {os.path.basename(path): file_digest(path)[1]}
    found = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(path, name))]
    return {name: file_digest(os.path.join(path, name))[1] for name in found}


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """One clause saying which input or tokenizer file changed between two
    :func:`input_state`, or None if none did."""
    before, after = old.get("inputs", {}), new.get("inputs", {})
    for path in sorted(set(before) | set(after)):
        was, now = before.get(path), after.get(path)
        if now == was:
            continue
        if now is None or was is None or was.keys() != now.keys():
            return f"input {path} is not the input it was"
        if "names" in was:
            count = f"{was['repositories']} -> {now['repositories']}"
            return f"the repositories of input {path} changed ({count} repositories)"
        what = [f"size {was['size']} -> {now['size']} bytes"] if was["size"] != now["size"] else []
        what += ["modification time"] if was["mtime_ns"] != now["mtime_ns"] else []
        return f"input {path} changed ({', '.join(what)})"
    before, after = old.get("tokenizer", {}), new.get("tokenizer", {})
    changed = [n for n in sorted(set(before) | set(after)) if before.get(n) != after.get(n)]
    if changed:
        return f"the tokenizer's {', '.join(changed)} changed"
    return None


def repos_state(source: str, repos: tuple[str, ...]) -> dict[str, str]:
    """Per repository (``""``: the loose files) a digest of the path, size and mtime of every
    file a pass-1 task of a checkout directory reads (regular files of a known language)."""
    state = {}
    for repo in repos:
        digest = new_hash()
        root = os.path.join(source, repo) if repo else source
        for rel in regular_files(root, Counter(), recursive=bool(repo)):
            if not language_of("", rel):
                continue
            try:
                info = os.lstat(os.path.join(root, rel))
            except OSError:
                continue
            line = f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
        state[repo] = digest.hexdigest()
    return state
