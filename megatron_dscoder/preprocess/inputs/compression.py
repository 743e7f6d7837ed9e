"""Streaming decompression of ``.gz`` and ``.zst`` inputs, and detection of truncated files.

``gzip`` raises on a truncated stream by itself; ``zstandard``'s streaming reader silently stops
at the end of the data instead, so :func:`zstd_complete` walks the frame and block headers of a
``.zst`` file (no decompression, a few bytes read per 128 KB block) to tell whether its last
frame is complete. A truncated shard is then counted as ``unreadable_file`` after its readable
part has been used.
"""

from __future__ import annotations

import gzip
import io
import struct
from typing import BinaryIO

ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


def open_compressed(path: str) -> tuple[BinaryIO, BinaryIO]:
    """(decompressed stream, raw file) for a possibly compressed file; raw.tell() gives progress."""
    raw = open(path, "rb")  # closed by the caller
    low = path.lower()
    if low.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if low.endswith((".zst", ".zstd")):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, buffer_size=1 << 20), raw  # type: ignore[arg-type]
    return raw, raw


def is_zstd(path: str) -> bool:
    return path.lower().endswith((".zst", ".zstd"))


def zstd_complete(path: str) -> bool:
    """True when every frame of the ``.zst`` file at ``path`` is complete (RFC 8878 layout)."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        while f.tell() < size:
            header = f.read(4)
            if len(header) < 4:
                return False
            (magic,) = struct.unpack("<I", header)
            if magic in ZSTD_SKIPPABLE:
                length = f.read(4)
                if len(length) < 4:
                    return False
                f.seek(struct.unpack("<I", length)[0], io.SEEK_CUR)
                continue
            if magic != ZSTD_MAGIC or not _skip_frame(f):
                return False
        return f.tell() == size


def _skip_frame(f: BinaryIO) -> bool:
    descriptor = f.read(1)
    if not descriptor:
        return False
    flags = descriptor[0]
    single_segment = bool(flags & 0x20)
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[flags >> 6]
    header_rest = (0 if single_segment else 1) + (0, 1, 2, 4)[flags & 0x03] + fcs_size
    if len(f.read(header_rest)) < header_rest:
        return False
    while True:
        block = f.read(3)
        if len(block) < 3:
            return False
        value = int.from_bytes(block, "little")
        last, kind, block_size = value & 1, (value >> 1) & 3, value >> 3
        content = 1 if kind == 1 else block_size
        start = f.tell()
        if f.seek(content, io.SEEK_CUR) > f.seek(0, io.SEEK_END):
            return False
        f.seek(start + content)
        if last:
            break
    if flags & 0x04:  # content checksum
        return len(f.read(4)) == 4
    return True
