"""Checksum manifest of a checkpoint: a flipped byte in a shard is refused at load, naming it.

A same-size corruption (a bad disk, a partial copy) passes every size check and megatron-core
loads it silently (a loss of 7 becomes 2e7). At save, each rank hashes the files it wrote
(``__R_*.distcp``; rank 0 also ``.metadata``, ``common.pt``, ``metadata.json`` and
``run_config.json``), rank 0 gathers the digests into ``checksums.json``, written atomically
inside ``iter_XXXXXXX.partial`` before the rename (with ``--async-save``, once the background
writers are done). Whatever the optimizer format, a rank's shards are its ``__RANK_*.distcp``
files, so the manifest covers every file. At load every rank verifies a disjoint subset
of the files and the failures are gathered, so all ranks raise the same error. A checkpoint
without a manifest (deleted, or written elsewhere) loads only with
``--allow-unverified-checkpoint``; a manifest that is malformed or leaves a file out is refused.

The hash is xxHash3-128 (about 11 GB/s per core, so reading the page-cached shards costs more
than hashing them); ``benchmarks/bench_checkpoint_checksums.py`` measures the cost at save and load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

MANIFEST = "checksums.json"
_CHUNK = 8 << 20


def _new_hash(algorithm: str) -> Callable[[], object]:
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128
    if algorithm == "blake2b":
        return lambda: hashlib.blake2b(digest_size=16)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def default_algorithm() -> str:
    """xxHash3-128 where the package is installed (it is pinned), else BLAKE2b."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "blake2b"
    return "xxh3_128"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 8 MiB chunks."""
    h = _new_hash(algorithm)()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _writer(name: str, world: int) -> int:
    """torch_dist names a rank's shards ``__RANK_I.distcp``; everything else is rank 0's."""
    head = name[2:].split("_", 1)[0] if name.startswith("__") else ""
    return int(head) if head.isdigit() and int(head) < world else 0


def written_by(ckpt_dir: Path, rank: int, world: int) -> list[Path]:
    """The files of ``ckpt_dir`` that ``rank`` hashes: those it wrote."""
    files = [p for p in sorted(ckpt_dir.iterdir()) if p.is_file() and p.name != MANIFEST]
    return [p for p in files if _writer(p.name, world) == rank]


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1  # a single process without a group (the HF exporter)


def write_manifest(ckpt_dir: Path) -> None:
    """Collective: hash this rank's files; rank 0 writes ``checksums.json`` atomically."""
    rank, world = _rank_world()
    algorithm = default_algorithm()
    local = {
        p.name: {"size": p.stat().st_size, "digest": file_digest(p, algorithm)}
        for p in written_by(ckpt_dir, rank, world)
    }
    gathered: list[dict | None] | None = [local] if world == 1 else None
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        torch.distributed.gather_object(local, gathered, dst=0)
    if rank == 0:
        files: dict[str, dict] = {}
        for part in gathered:
            files.update(part or {})
        tmp = ckpt_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"algorithm": algorithm, "files": files}, indent=1) + "\n")
        os.replace(tmp, ckpt_dir / MANIFEST)


def _check(ckpt_dir: Path, name: str, entry: dict, algorithm: str) -> str | None:
    path = ckpt_dir / name
    if not path.is_file():
        return f"{path}: missing (listed in {MANIFEST})"
    if path.stat().st_size != entry["size"]:
        return f"{path}: {path.stat().st_size} bytes, {entry['size']} when saved"
    if file_digest(path, algorithm) != entry["digest"]:
        return f"{path}: checksum mismatch (corrupted since it was saved)"
    return None


class ManifestProblem(ValueError):
    """A missing, malformed or incomplete manifest; the message names the file."""


UNVERIFIED_FLAG = "--allow-unverified-checkpoint"


def read_manifest(ckpt_dir: Path) -> tuple[str, dict[str, dict]] | None:
    """(algorithm, {file name: {"size", "digest"}}) of ``ckpt_dir``'s manifest; None when there
    is none. Raises :class:`ManifestProblem` for a malformed one or one that leaves a file of the
    checkpoint out (a deleted entry must not turn its file into an unchecked one)."""
    path = ckpt_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise ManifestProblem(f"{path}: unreadable manifest ({err})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    algorithm = manifest.get("algorithm") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not isinstance(algorithm, str):
        raise ManifestProblem(f"{path}: malformed manifest (needs 'algorithm' and 'files')")
    try:
        _new_hash(algorithm)
    except (ValueError, ImportError) as err:
        raise ManifestProblem(f"{path}: {err}") from None
    for name, entry in files.items():
        if (
            not name
            or "/" in name
            or name in (".", "..", MANIFEST)
            or not isinstance(entry, dict)
            or type(entry.get("size")) is not int
            or entry["size"] < 0
            or not isinstance(entry.get("digest"), str)
        ):
            raise ManifestProblem(f"{path}: malformed entry {name!r}")
    on_disk = {p.name for p in ckpt_dir.iterdir() if p.is_file() and p.name != MANIFEST}
    unlisted = sorted(on_disk - files.keys() - {MANIFEST + ".tmp"})
    if unlisted:
        more = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise ManifestProblem(f"{ckpt_dir / unlisted[0]}: not listed in {path}{more}")
    return algorithm, files


def manifest_problem(ckpt_dir: Path, allow_unverified: bool = False) -> str | None:
    """One line saying why ``ckpt_dir`` cannot be verified (None: it can, or may go unverified).

    Every checkpoint this version writes (and every HF import) carries a manifest, so a missing
    one means it was deleted or the checkpoint comes from elsewhere: loading it unchecked takes
    an explicit ``--allow-unverified-checkpoint``.
    """
    try:
        found = read_manifest(ckpt_dir)
    except ManifestProblem as err:
        return str(err)
    if found is None and not allow_unverified:
        return (
            f"{ckpt_dir / MANIFEST}: missing, so the checkpoint's files cannot be verified; "
            f"load it unverified with {UNVERIFIED_FLAG}"
        )
    return None


def verify_manifest(ckpt_dir: Path, allow_unverified: bool = False) -> list[str]:
    """Collective: every rank checks a disjoint share of the files; returns all problems."""
    rank, world = _rank_world()
    problem = manifest_problem(ckpt_dir, allow_unverified)
    if problem:
        return [problem]
    found = read_manifest(ckpt_dir)
    if found is None:
        if rank == 0:
            logger.warning("%s: no %s: loaded unverified (%s)", ckpt_dir, MANIFEST, UNVERIFIED_FLAG)
        return []
    algorithm, files = found
    names = sorted(files)
    problems = [
        msg
        for name in names[rank::world]
        if (msg := _check(ckpt_dir, name, files[name], algorithm))
    ]
    if world == 1:
        return problems
    gathered: list[list[str] | None] = [None] * world
    torch.distributed.all_gather_object(gathered, problems)
    return sorted(p for part in gathered for p in (part or []))
