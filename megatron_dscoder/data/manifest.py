"""A manifest of dataset parts: ``PREFIX.parts/manifest.json``, readable as a training blend.

A preprocessing run with ``--output-shard-mb`` writes its output as parts (``part-NNNNN.bin/
.idx``, each a complete Megatron indexed dataset) instead of one merged pair, and lists them::

    {"format": "megatron-dscoder-manifest", "version": 2, "dtype": "uint16",
     "algorithm": "xxh3_128",
     "parts": [{"prefix": "part-00000", "documents": 812, "tokens": 1048213,
                "bin_bytes": 2096426, "idx_bytes": 16278,
                "bin_digest": "...", "idx_digest": "..."}, ...],
     "digest": "..."}

Prefixes are plain names inside the manifest's directory. ``digest`` covers the rest of the
document, so an edited count or name is refused; a count edited *and* re-digested is caught by
the ``.idx`` (below). Training takes ``--data-path PREFIX.parts/manifest.json``, alone or inside
a weighted blend; :func:`blend_from_manifest` gives the parts weighted by their tokens, so
sampling matches one merged dataset.

What is verified when (the costs: a multi-TB blend must not be re-read at every launch):

- every load: the document's shape and digest; each part's name (no path, no symlink out of
  the directory); the sizes of its ``.bin`` and ``.idx``; the ``.idx``'s checksum (20 bytes
  per document: 1 % of the ``.bin`` for 1,000-token documents) and the documents and tokens it
  describes.
- on request (:func:`verify_manifest` with ``full=True``, ``python -m
  megatron_dscoder.data.manifest PATH``): every ``.bin`` checksum as well.

A version-1 manifest (no checksums) is refused; rerunning the ``dscoder-preprocess`` command
that wrote it writes a version-2 one (with its ``--work-dir`` kept, only the merge reruns).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from megatron_dscoder.data.indexed import DataError, read_lengths

logger = logging.getLogger(__name__)

FORMAT = "megatron-dscoder-manifest"
VERSION = 2
_CHUNK = 8 << 20
_DTYPES = ("uint16", "int32")


def _hashes() -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {"blake2b": lambda: hashlib.blake2b(digest_size=16)}
    try:
        import xxhash

        found["xxh3_128"] = xxhash.xxh3_128
    except ImportError:
        pass
    return found


HASHES = _hashes()
#: xxHash3-128 where the (pinned) package is installed, else BLAKE2b.
ALGORITHM = "xxh3_128" if "xxh3_128" in HASHES else "blake2b"


def new_hash(algorithm: str = ALGORITHM) -> Any:
    return HASHES[algorithm]()


def file_digest(path: str, algorithm: str = ALGORITHM) -> str:
    """Hex digest of a file, read in 8 MiB chunks."""
    h = new_hash(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Part:
    """One part as the manifest lists it."""

    prefix: str
    documents: int
    tokens: int
    bin_bytes: int
    idx_bytes: int
    bin_digest: str
    idx_digest: str


def part_record(prefix: str, bin_digest: str, algorithm: str = ALGORITHM) -> Part:
    """The entry of a just-written part: ``bin_digest`` was hashed while the ``.bin`` was
    written; the ``.idx`` (small) is hashed here, its counts read from it."""
    header, lengths, _ = read_lengths(prefix)
    return Part(
        prefix=os.path.basename(prefix),
        documents=int(header.num_seqs),
        tokens=int(np.asarray(lengths).sum(dtype=np.int64)),
        bin_bytes=os.path.getsize(f"{prefix}.bin"),
        idx_bytes=os.path.getsize(f"{prefix}.idx"),
        bin_digest=bin_digest,
        idx_digest=file_digest(f"{prefix}.idx", algorithm),
    )


def _self_digest(document: dict[str, Any], algorithm: str) -> str:
    body = {k: v for k, v in document.items() if k != "digest"}
    h = new_hash(algorithm)
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def write_manifest(path: str, dtype: str, parts: list[Part], algorithm: str = ALGORITHM) -> None:
    """Write the manifest under a temporary name and rename it into place."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": dtype,
        "algorithm": algorithm,
        "parts": [asdict(p) for p in parts],
    }
    document["digest"] = _self_digest(document, algorithm)
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump(document, f, indent=1)
    os.replace(partial, path)


def is_manifest(path: str) -> bool:
    return path.endswith(".json")


@dataclass(frozen=True)
class Manifest:
    path: str
    dtype: str
    algorithm: str
    parts: tuple[Part, ...]

    @property
    def root(self) -> str:
        """The parts' directory: the manifest's own, a symlink to the manifest followed."""
        return os.path.dirname(os.path.realpath(self.path))


def _fail(path: str, what: str) -> DataError:
    return DataError(f"{path}: {what}")


_INTS = {f.name for f in fields(Part) if f.type == "int"}
_STRS = {f.name for f in fields(Part) if f.type == "str"}


def _part(path: str, i: int, entry: object) -> Part:
    if not isinstance(entry, dict) or set(entry) != _INTS | _STRS:
        raise _fail(path, f"part {i} is malformed (needs {', '.join(sorted(_INTS | _STRS))})")
    name = entry["prefix"]
    if not isinstance(name, str) or not name:
        raise _fail(path, f"part {i}: prefix must be a file name")
    if os.path.basename(name) != name or "\\" in name or "\0" in name or name in (".", ".."):
        raise _fail(
            path, f"part {name!r}: a prefix is a plain name inside the manifest's directory"
        )
    for key in sorted(_STRS - {"prefix"}):
        if not isinstance(entry[key], str) or not entry[key]:
            raise _fail(path, f"part {name!r}: {key} must be a hex digest")
    for key in sorted(_INTS):
        value = entry[key]
        least = 1 if key in ("documents", "tokens") else 0
        if type(value) is not int or value < least:
            raise _fail(path, f"part {name!r}: {key} must be an integer >= {least}, not {value!r}")
    return Part(**entry)


def read_manifest(path: str) -> Manifest:
    """Parse and check a manifest's document (not yet its files); :class:`DataError` in one line
    naming the file (and the part) otherwise."""
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except (OSError, ValueError, RecursionError) as err:
        raise _fail(path, f"not a readable manifest ({type(err).__name__}: {err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _fail(path, f"not a {FORMAT} file")
    version = document.get("version")
    if version == 1 and type(version) is int:
        raise _fail(
            path,
            "a version-1 manifest carries no checksums; regenerate it by rerunning the "
            "dscoder-preprocess command that wrote it",
        )
    if version != VERSION or type(version) is not int:
        raise _fail(path, f"unsupported manifest version {version!r} (this version reads 2)")
    algorithm, digest = document.get("algorithm"), document.get("digest")
    if not isinstance(algorithm, str) or algorithm not in HASHES or not isinstance(digest, str):
        raise _fail(path, f"malformed: needs 'digest' and 'algorithm' (one of {sorted(HASHES)})")
    try:
        recomputed = _self_digest(document, algorithm)
    except (ValueError, RecursionError) as err:
        raise _fail(path, f"not a readable manifest ({type(err).__name__}: {err})") from None
    if recomputed != digest:
        raise _fail(path, "edited since it was written (its digest does not match its content)")
    dtype, parts = document.get("dtype"), document.get("parts")
    if dtype not in _DTYPES:
        raise _fail(path, f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
    if not isinstance(parts, list) or not parts:
        raise _fail(path, "'parts' must be a non-empty list")
    checked = tuple(_part(path, i, entry) for i, entry in enumerate(parts))
    names = [p.prefix for p in checked]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise _fail(path, f"part {twice!r} is listed twice")
    return Manifest(path, dtype, algorithm, checked)


def _inside(root: str, file: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(file)]) == real_root


def verify_part(manifest: Manifest, part: Part, full: bool = False) -> None:
    """The part's files against its entry (see the module docstring for what, when)."""
    where = f"part {part.prefix!r}"
    prefix = os.path.join(manifest.root, part.prefix)
    for suffix, size, digest in (
        (".bin", part.bin_bytes, part.bin_digest),
        (".idx", part.idx_bytes, part.idx_digest),
    ):
        file = prefix + suffix
        if not _inside(manifest.root, file):
            raise _fail(manifest.path, f"{where}: {file} leads outside the manifest's directory")
        if not os.path.isfile(file):
            raise _fail(manifest.path, f"{where}: {file} is missing")
        actual = os.path.getsize(file)
        if actual != size:
            raise _fail(manifest.path, f"{where}: {file} has {actual} bytes, {size} when written")
        if (suffix == ".idx" or full) and file_digest(file, manifest.algorithm) != digest:
            raise _fail(
                manifest.path, f"{where}: {file}: checksum mismatch (changed since written)"
            )
    try:
        header, lengths, _ = read_lengths(prefix)
    except DataError as err:
        raise _fail(manifest.path, f"{where}: {err}") from None
    tokens = int(np.asarray(lengths).sum(dtype=np.int64))
    if (str(header.dtype), header.num_seqs, tokens) != (
        manifest.dtype,
        part.documents,
        part.tokens,
    ):
        raise _fail(
            manifest.path,
            f"{where}: lists {part.documents} documents, {part.tokens} {manifest.dtype} tokens; "
            f"its .idx has {header.num_seqs}, {tokens} {header.dtype}",
        )
    if part.bin_bytes != part.tokens * header.dtype.itemsize:
        raise _fail(manifest.path, f"{where}: {part.bin_bytes} .bin bytes for {tokens} tokens")


def verify_manifest(path: str, full: bool = False) -> Manifest:
    """:func:`read_manifest`, then every part's files (``full``: their ``.bin`` checksums too)."""
    manifest = read_manifest(path)
    for part in manifest.parts:
        verify_part(manifest, part, full)
    return manifest


_verified: dict[tuple[str, int, int, int], tuple[list[str], list[float]]] = {}


def blend_from_manifest(path: str) -> tuple[list[str], list[float]]:
    """(absolute prefixes, token weights) of a manifest's parts, verified once per process (a
    launch reads the blend several times)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise _fail(path, f"not a readable manifest ({err.strerror})") from None
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _verified:
        manifest = verify_manifest(path)
        _verified[key] = (
            [os.path.join(manifest.root, p.prefix) for p in manifest.parts],
            [float(p.tokens) for p in manifest.parts],
        )
    prefixes, weights = _verified[key]
    return list(prefixes), list(weights)


def blend_args(path: str) -> list[str]:
    """The manifest as Megatron's ``--data-path W1 P1 W2 P2 ...`` list."""
    prefixes, weights = blend_from_manifest(path)
    return [
        x for weight, prefix in zip(weights, prefixes, strict=True) for x in (f"{weight:g}", prefix)
    ]


def _verify_all(paths: list[str]) -> int:
    for path in paths:
        manifest = verify_manifest(path, full=True)
        tokens = sum(p.tokens for p in manifest.parts)
        sys.stdout.write(f"{path}: {len(manifest.parts)} parts, {tokens} tokens: verified\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m megatron_dscoder.data.manifest MANIFEST...``: every check, ``.bin`` checksums
    included, one line per manifest; the first failure is one line and exit status 1."""
    from megatron_dscoder.errors import UserError, run_cli

    def prepare() -> list[str]:
        paths = sys.argv[1:] if argv is None else list(argv)
        if not paths or any(p.startswith("-") for p in paths):
            raise UserError("usage: python -m megatron_dscoder.data.manifest MANIFEST.json...")
        for path in paths:
            if not os.path.isfile(path):
                raise UserError(f"{path}: no such manifest file")
        return paths

    return run_cli(prepare, _verify_all)


if __name__ == "__main__":
    sys.exit(main())
