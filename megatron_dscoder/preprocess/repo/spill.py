"""Bringing the files of one repository together, with bounded memory: hash-partitioned spill.

Records of one repository can be anywhere in a corpus of hundreds of GB, so they are grouped
in two passes (a disk-based shuffle):

1. **Spill.** Each repository-level record is appended to bucket file ``hash(repo) % B``
   (B fixed from the estimated input size, at most :data:`MAX_BUCKETS`; see
   :func:`num_buckets`). Workers serialise their records per bucket; the main process appends
   the blobs in task order through :class:`SpillWriter`, whose buffers never exceed
   ``buffer_bytes``. Bucket contents are therefore in input order, whatever the worker count.
2. **Regions.** Before a bucket is processed, :func:`plan_regions` makes sure it fits in memory:
   a bucket over ``target_bytes`` (8 MiB by default) is re-split (streaming, by a hash with a
   different salt) into :data:`FANOUT` sub-buckets, recursively; a part that one repository
   dominates stays whole up to ``max_bytes`` (32 MiB), and a repository larger than that is cut
   into record-aligned windows (ordered per window, counted as ``oversize_repo_windows``). A
   worker thus holds about ``target_bytes`` of spilled text, never more than ``max_bytes``,
   however large the corpus: memory does not grow with the corpus.

The on-disk record format is ``<IIII`` (lengths of repo, path, lang, text in UTF-8 bytes)
followed by the four byte strings. Temporary disk use is about the size of the repository-level
text that passes the filters.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from megatron_dscoder.preprocess.records import Record

HEADER = struct.Struct("<IIII")
MAX_BUCKETS = 1024
MIN_BUCKETS = 16
FANOUT = 16
MAX_DEPTH = 3


def num_buckets(estimated_bytes: int, target_bytes: int) -> int:
    """Bucket count for an input of about ``estimated_bytes`` (half-full buckets on average)."""
    wanted = -(-2 * estimated_bytes // max(target_bytes, 1))
    return max(MIN_BUCKETS, min(MAX_BUCKETS, wanted))  # larger corpora: re-split (plan_regions)


def bucket_of(repo: bytes, buckets: int, depth: int = 0) -> int:
    """Stable bucket of a repository name (independent of process and Python hash seed)."""
    digest = hashlib.blake2b(repo, digest_size=8, salt=depth.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") % buckets


def encode_record(record: Record) -> tuple[bytes, bytes]:
    """(utf-8 repo name, serialised record)."""
    repo, path, lang = record.repo.encode(), record.path.encode(), record.lang.encode()
    text = record.text.encode()
    return repo, b"".join(
        (HEADER.pack(len(repo), len(path), len(lang), len(text)), repo, path, lang, text)
    )


def partition_records(records: list[Record], buckets: int) -> dict[int, bytes]:
    """Partition stage: serialise records and group them per bucket (bucket -> blob)."""
    parts: dict[int, list[bytes]] = {}
    for record in records:
        repo, blob = encode_record(record)
        parts.setdefault(bucket_of(repo, buckets), []).append(blob)
    return {bucket: b"".join(blobs) for bucket, blobs in parts.items()}


def decode_records(data: bytes | memoryview) -> list[Record]:
    """All records of a serialised region."""
    view = memoryview(data)
    out = []
    offset = 0
    end = len(view)
    size = HEADER.size
    while offset < end:
        n_repo, n_path, n_lang, n_text = HEADER.unpack_from(view, offset)
        offset += size
        repo = str(view[offset : offset + n_repo], "utf-8")
        offset += n_repo
        path = str(view[offset : offset + n_path], "utf-8")
        offset += n_path
        lang = str(view[offset : offset + n_lang], "utf-8")
        offset += n_lang
        text = str(view[offset : offset + n_text], "utf-8")
        offset += n_text
        out.append(Record(text=text, repo=repo, path=path, lang=lang))
    return out


def iter_raw_records(path: str) -> Iterator[tuple[bytes, int, bytes]]:
    """Stream (repo, start offset, serialised record) over a spill file without loading it."""
    with open(path, "rb") as f:
        offset = 0
        while len(header := f.read(HEADER.size)) == HEADER.size:
            n_repo, n_path, n_lang, n_text = HEADER.unpack(header)
            body = f.read(n_repo + n_path + n_lang + n_text)
            yield body[:n_repo], offset, header + body
            offset += HEADER.size + len(body)


class SpillWriter:
    """Appends blobs to bucket files ``{directory}/{prefix}{bucket:05d}``, buffering in memory."""

    def __init__(self, directory: str, prefix: str = "b", buffer_bytes: int = 32 << 20) -> None:
        self.directory = directory
        self.prefix = prefix
        self.buffer_bytes = buffer_bytes
        self._parts: dict[int, list[bytes]] = {}
        self._buffered = 0
        self.sizes: dict[int, int] = {}

    def path(self, bucket: int) -> str:
        return os.path.join(self.directory, f"{self.prefix}{bucket:05d}")

    def add(self, bucket: int, blob: bytes) -> None:
        self._parts.setdefault(bucket, []).append(blob)
        self._buffered += len(blob)
        self.sizes[bucket] = self.sizes.get(bucket, 0) + len(blob)
        if self._buffered >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        for bucket in sorted(self._parts):
            with open(self.path(bucket), "ab") as f:
                f.write(b"".join(self._parts[bucket]))
        self._parts.clear()
        self._buffered = 0


@dataclass(frozen=True)
class Region:
    """Record-aligned byte ranges of spill files: the unit of work of the second pass.

    One range ``[start, end)`` of ``path``, or, when ``parts`` is given, the concatenation of
    its ``(path, start, end)`` ranges (one bucket's pieces written by several first-pass tasks).
    """

    path: str
    start: int
    end: int
    windowed: bool = False
    parts: tuple[tuple[str, int, int], ...] = ()

    @property
    def size(self) -> int:
        return sum(e - s for _, s, e in self.parts) if self.parts else self.end - self.start


def read_region(region: Region) -> list[Record]:
    chunks = []
    for path, start, end in region.parts or ((region.path, region.start, region.end),):
        with open(path, "rb") as f:
            f.seek(start)
            chunks.append(f.read(end - start))
    return decode_records(b"".join(chunks))


def plan_regions(
    path: str,
    target_bytes: int,
    max_bytes: int | None = None,
    depth: int = 0,
    stats: dict[str, int] | None = None,
) -> Iterator[Region]:
    """Record-aligned regions of a bucket file, for workers to process one at a time.

    A file over ``target_bytes`` is re-split by repository (up to :data:`MAX_DEPTH` levels).
    What cannot be split further because one repository dominates it stays whole up to
    ``max_bytes`` (default: ``target_bytes``); beyond that it is cut into windows of
    ``max_bytes`` and the repository is ordered per window (counted as ``oversize_repo_windows``).
    """
    max_bytes = max(max_bytes or target_bytes, target_bytes)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size == 0:
        return
    if size <= target_bytes:
        yield Region(path, 0, size)
        return
    if depth < MAX_DEPTH:
        writer = SpillWriter(os.path.dirname(path), f"{os.path.basename(path)}.", 16 << 20)
        for repo, _, blob in iter_raw_records(path):
            writer.add(bucket_of(repo, FANOUT, depth + 1), blob)
        writer.flush()
        if max(writer.sizes.values()) < size:  # the split helped: recurse into each part
            if stats is not None:
                stats["spill_resplits"] = stats.get("spill_resplits", 0) + 1
            os.remove(path)
            for sub in sorted(writer.sizes):
                yield from plan_regions(writer.path(sub), target_bytes, max_bytes, depth + 1, stats)
            return
        for sub in writer.sizes:  # one repository holds everything: keep the original
            os.remove(writer.path(sub))
    if size <= max_bytes:
        yield Region(path, 0, size)
        return
    if stats is not None:
        stats["oversize_repo_windows"] = stats.get("oversize_repo_windows", 0) + 1
    window_start = window_end = 0
    for _, start, blob in iter_raw_records(path):
        if start + len(blob) - window_start > max_bytes and window_end > window_start:
            yield Region(path, window_start, window_end, windowed=True)
            window_start = window_end
        window_end = start + len(blob)
    if window_end > window_start:
        yield Region(path, window_start, window_end, windowed=True)
