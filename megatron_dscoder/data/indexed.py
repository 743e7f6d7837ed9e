"""Megatron's indexed binary format (MMIDIDX v1 ``.bin`` + ``.idx``): writer, reader and checks.

The one place the format lives: preprocessing writes it, the shard merge reads it back, and
training checks every prefix with :func:`check_prefix` before megatron-core's ``IndexedDataset``
maps it. Numpy only (no torch import).

``.bin`` is every document's tokens back to back (uint16 when the vocabulary has fewer than
65,500 entries, else int32). ``.idx`` is::

    b"MMIDIDX\\x00\\x00" | u64 version=1 | u8 dtype code | u64 S | u64 S+1
    | int32[S] lengths | int64[S] byte pointers | int64[S+1] document indices (0..S)

with one sequence per document (S documents). megatron-core's ``IndexedDataset`` reads it as
is. The writer does not import torch (megatron-core's builder does), keeps memory flat (the
lengths are spooled to a temporary file and the index is written in chunks), and is crash-safe:
both files are written under temporary names and renamed only at :meth:`finalize` (the old
``.idx`` is removed first and the new one is renamed last, so an interrupted run never leaves a
``.bin``/``.idx`` pair that looks complete; that sequence runs under
:func:`~megatron_dscoder.data.prefix.prefix_lock`, so concurrent writers of one prefix never mix
their files). A full disk raises :class:`NoSpaceError` naming the directory, after the temporary
files are removed and with the previous pair untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from megatron_dscoder.data.prefix import prefix_lock
from megatron_dscoder.errors import UserError

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES: dict[type, int] = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}
DTYPES: dict[int, type] = {code: dtype for dtype, code in DTYPE_CODES.items()}
HEADER_BYTES = len(INDEX_HEADER) + 8 + 1 + 8 + 8  # magic | version | dtype | S | S+1 = 34
_CHUNK = 1 << 20
_SCAN_BYTES = 16 << 20


class EmptyOutputError(UserError, RuntimeError):
    """No document was written; no output pair is produced (megatron cannot map an empty .bin)."""


class NoSpaceError(UserError, OSError):
    """The disk (or quota) is full while writing a pair; ``str()`` names the directory."""

    def __str__(self) -> str:
        return f"no space left on device ({self.filename})"


@contextlib.contextmanager
def _out_of_space_named(directory: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(err, NoSpaceError):
            raise NoSpaceError(err.errno, "no space left on device", directory) from err
        raise


def token_dtype(vocab_size: int) -> type:
    """Megatron's rule: uint16 when the vocabulary has fewer than 65,500 entries, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


class IndexedDatasetWriter:
    """Appends documents to ``{prefix}.bin``/``.idx`` (temporary names until :meth:`finalize`)."""

    def __init__(self, prefix: str, dtype: npt.DTypeLike) -> None:
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        directory = os.path.dirname(os.path.abspath(self.prefix))
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        base = os.path.basename(self.prefix)
        self._bin_path = self._temp(directory, f"{base}.bin.")
        self._idx_path = self._temp(directory, f"{base}.idx.")
        self._lengths_path = self._temp(directory, f"{base}.lengths.")
        self._bin = open(self._bin_path, "wb")  # closed in finalize/abort
        self._lengths = open(self._lengths_path, "wb")
        self.documents = 0
        self.tokens = 0

    @staticmethod
    def _temp(directory: str, prefix: str) -> str:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=directory)
        os.close(fd)
        return path

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: ``tokens`` is their concatenation, ``lengths`` their sizes."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        lengths = np.ascontiguousarray(lengths, dtype=np.int32)
        if int(lengths.sum(dtype=np.int64)) != tokens.size:
            raise ValueError("lengths do not add up to the number of tokens")
        with _out_of_space_named(self.directory):
            self._bin.write(tokens.tobytes())
            self._lengths.write(lengths.tobytes())
        self.documents += lengths.size
        self.tokens += tokens.size

    def finalize(self) -> tuple[str, str]:
        """Write the index and move both files into place; returns (bin path, idx path)."""
        if self.documents == 0:
            self.abort()
            raise EmptyOutputError(f"no documents to write to {self.prefix}.bin")
        with _out_of_space_named(self.directory):
            self._bin.close()
            self._lengths.close()
            self._write_index()
            umask = os.umask(0)
            os.umask(umask)
            for path in (self._bin_path, self._idx_path):
                os.chmod(path, 0o666 & ~umask)  # mkstemp creates 0600 files
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
        bin_final, idx_final = f"{self.prefix}.bin", f"{self.prefix}.idx"
        with prefix_lock(self.prefix):
            if os.path.exists(idx_final):
                os.remove(idx_final)
            os.replace(self._bin_path, bin_final)
            os.replace(self._idx_path, idx_final)
        os.remove(self._lengths_path)
        return bin_final, idx_final

    def _write_index(self) -> None:
        count = self.documents
        with open(self._idx_path, "wb") as idx:
            idx.write(INDEX_HEADER)
            idx.write(struct.pack("<Q", INDEX_VERSION))
            idx.write(struct.pack("<B", DTYPE_CODES[self.dtype.type]))
            idx.write(struct.pack("<Q", count))
            idx.write(struct.pack("<Q", count + 1))
            for chunk in self._length_chunks():
                idx.write(chunk.tobytes())
            pointer = 0
            for chunk in self._length_chunks():
                sizes = chunk.astype(np.int64) * self.dtype.itemsize
                starts = np.cumsum(sizes) - sizes + pointer
                pointer += int(sizes.sum())
                idx.write(starts.tobytes())
            for start in range(0, count + 1, _CHUNK):
                idx.write(
                    np.arange(start, min(start + _CHUNK, count + 1), dtype=np.int64).tobytes()
                )

    def _length_chunks(self) -> Iterator[np.ndarray]:
        with open(self._lengths_path, "rb") as f:
            while data := f.read(_CHUNK * 4):
                yield np.frombuffer(data, dtype=np.int32)

    def abort(self) -> None:
        """Close and delete the temporary files (the final names are never touched).

        Buffered bytes that cannot be flushed (a full disk) are dropped: the files go anyway.
        """
        for handle in (self._bin, self._lengths):
            with contextlib.suppress(OSError):
                handle.close()
        for path in (self._bin_path, self._idx_path, self._lengths_path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


MASK_SUFFIX = "_mask"
"""An SFT dataset's per-token loss masks: one uint8 per token in a sibling MMIDIDX pair."""


def mask_prefix(prefix: str) -> str:
    """Where the loss masks of the dataset ``prefix`` live (``PREFIX_mask.bin/.idx``)."""
    return f"{prefix}{MASK_SUFFIX}"


class DataError(UserError, ValueError):
    """An unusable ``.bin``/``.idx`` pair; the message names the file."""


@dataclass(frozen=True)
class IndexHeader:
    """The fixed part of an ``.idx`` file."""

    dtype: np.dtype
    num_seqs: int
    num_docs: int
    """Document boundaries, ``num_seqs + 1`` as written here (0..S)."""

    @property
    def index_bytes(self) -> int:
        """Size the whole ``.idx`` must have: header, lengths, pointers, document indices."""
        return HEADER_BYTES + 12 * self.num_seqs + 8 * self.num_docs


def read_header(idx_path: str | Path) -> IndexHeader:
    """Parse and check an ``.idx`` header (raises :class:`DataError` naming the file)."""
    with open(idx_path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or not head.startswith(INDEX_HEADER):
        raise DataError(f"{idx_path}: not a Megatron MMIDIDX index (bad header)")
    version, code, num_seqs, num_docs = struct.unpack("<QBQQ", head[len(INDEX_HEADER) :])
    if version != INDEX_VERSION or code not in DTYPES:
        raise DataError(f"{idx_path}: unsupported version {version} or dtype code {code}")
    return IndexHeader(dtype=np.dtype(DTYPES[code]), num_seqs=num_seqs, num_docs=num_docs)


def read_lengths(prefix: str) -> tuple[IndexHeader, np.ndarray, np.ndarray]:
    """(header, lengths, byte pointers) of ``prefix.idx``, memory-mapped."""
    idx = f"{prefix}.idx"
    header = read_header(idx)
    size = os.path.getsize(idx)
    if size < header.index_bytes:
        raise DataError(f"{idx}: truncated ({size} of at least {header.index_bytes} bytes)")
    n = header.num_seqs
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return header, empty.astype(np.int32), empty
    lengths = np.memmap(idx, dtype=np.int32, mode="r", offset=HEADER_BYTES, shape=(n,))
    pointers = np.memmap(idx, dtype=np.int64, mode="r", offset=HEADER_BYTES + 4 * n, shape=(n,))
    return header, lengths, pointers


def read_documents(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(all tokens, document lengths) of a dataset, loaded into memory."""
    header, lengths, _ = read_lengths(prefix)
    return np.fromfile(f"{prefix}.bin", dtype=header.dtype), np.array(lengths)


def check_prefix(prefix: str, vocab_size: int) -> int:
    """Validate one ``PREFIX.bin``/``PREFIX.idx`` pair; returns its document count.

    Both files present, the ``.idx`` header and size consistent, the ``.bin`` exactly as long as
    the ``.idx`` says (a longer one belongs to another run), and token ids (sampled from the
    first 16 MB of the ``.bin``) inside the tokenizer's vocabulary. Checked under the prefix's
    shared lock, and again if a writer replaced the pair meanwhile.
    """
    for _ in range(3):
        with prefix_lock(prefix, shared=True):
            before = _identity(prefix)
            try:
                count = _check_pair(prefix, vocab_size)
            except DataError:
                if _identity(prefix) == before:
                    raise
                continue
            if _identity(prefix) == before:
                return count
    raise DataError(f"{prefix}.bin/.idx: replaced while being checked (is a run writing it?)")


def _identity(prefix: str) -> tuple[tuple[int, int, int] | None, ...]:
    out = []
    for suffix in (".idx", ".bin"):
        try:
            st = os.stat(prefix + suffix)
            out.append((st.st_ino, st.st_dev, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _check_pair(prefix: str, vocab_size: int) -> int:
    idx, binf = Path(prefix + ".idx"), Path(prefix + ".bin")
    for path in (idx, binf):
        if not path.is_file():
            raise DataError(f"{path}: missing (data prefix {prefix!r})")
    header, lengths, pointers = read_lengths(prefix)
    if header.num_seqs:
        needed = int(pointers[-1]) + int(lengths[-1]) * header.dtype.itemsize
        actual = binf.stat().st_size
        if actual < needed:
            raise DataError(f"{binf}: truncated ({actual} of {needed} bytes)")
        if actual > needed:
            raise DataError(
                f"{binf}: {actual} bytes but {idx.name} describes {needed} "
                "(the pair comes from different runs)"
            )
        count = min(needed, _SCAN_BYTES) // header.dtype.itemsize
        head = np.memmap(binf, dtype=header.dtype, mode="r", shape=(count,)) if count else []
        largest = int(np.max(head)) if len(head) else -1
        if largest >= vocab_size:
            raise DataError(
                f"{binf}: token id {largest} does not fit the tokenizer's "
                f"{vocab_size} tokens (data made with another tokenizer?)"
            )
    return max(header.num_docs - 1, 0)
