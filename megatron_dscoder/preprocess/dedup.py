"""Corpus-wide near-deduplication: LSH group-by, Jaccard verification, connected components.

MinHash near-dedup in the formulation that scales out (BigCode's, without an in-memory index):

1. **Signatures** (in every partition, in parallel; :mod:`.minhash`): each sample gets
   ``num_perm`` MinHash values over its word 5-grams, cut into ``bands`` bands of ``rows``
   values; each band becomes one 64-bit key, hash(band index, band values). A shard writes its
   signatures and its (key, sample id) records, sorted by key, next to its tokens. A sample id
   is ``shard << 32 | position in the shard``, so ids increase in output order.
2. **Group-by** on the band key: the key space is cut into ``P`` equal ranges, P chosen after
   the signatures exist so that one range holds at most ``group_bytes`` (64 MiB) of records on
   average; the task of a range reads that slice of every shard's sorted keys (binary search
   on a memory map), sorts it, and links each sample of a run of equal keys to the run's
   smallest id (a star: n - 1 candidate pairs per bucket instead of n^2/2).
3. **Verification** (on by default): a candidate pair is kept only if its signatures agree in
   at least ``threshold`` of their positions (the MinHash estimate of Jaccard similarity),
   which removes the pairs LSH lets through below the threshold. Pairs are checked in blocks
   of :data:`VERIFY_BLOCK`, reading the two signature rows from the shards' memory maps.
4. **Connected components** of the verified pairs on the driver (deterministic label
   propagation with pointer jumping: every node ends with the smallest id of its component).
   The smallest id of each component (its first sample in output order) is kept; the others
   are dropped when the shards are finalised.

**Memory.** A group-by task holds one key range: about ``group_bytes`` of 16-byte records (a
skewed range can exceed the average; keys are hashes, so ranges are balanced in expectation),
about 3x that while sorting, plus ``VERIFY_BLOCK`` x 2 x num_perm x 4 bytes (32 MiB) during
verification. The driver holds the verified pairs only, 16 bytes each plus about 40 bytes per
distinct node while labelling, i.e. it grows with the number of near-duplicates, not with the
corpus. Disk: ``num_perm x 4 + bands x 16`` bytes per sample (1.6 KB with the defaults).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from megatron_dscoder.preprocess.minhash import MinHashConfig, band_keys, estimated_jaccard

VERIFY_BLOCK = 1 << 15
_LOCAL = np.uint64(0xFFFFFFFF)


def shard_file(work_dir: str, shard: int, kind: str) -> str:
    """Path of one of a shard's work files (``tok``, ``len``, ``sig``, ``key``, ``id``)."""
    return os.path.join(work_dir, f"s{shard:07d}.{kind}.npy")


def save_array(path: str, array: np.ndarray) -> None:
    """``np.save`` under a temporary name, then renamed (a retried task never sees half files)."""
    tmp = f"{path}.{os.getpid()}.partial"
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def write_band_records(work_dir: str, shard: int, sig: np.ndarray, config: MinHashConfig) -> int:
    """Write a shard's signatures and sorted (band key, sample id) records; returns their count."""
    save_array(shard_file(work_dir, shard, "sig"), sig)
    bands, rows = config.band_layout()
    present = np.flatnonzero((sig != np.uint32(0xFFFFFFFF)).any(axis=1))
    keys = band_keys(sig[present], bands, rows).ravel()
    ids = np.repeat((np.uint64(shard) << np.uint64(32)) | present.astype(np.uint64), bands)
    order = np.lexsort((ids, keys))
    save_array(shard_file(work_dir, shard, "key"), keys[order])
    save_array(shard_file(work_dir, shard, "id"), ids[order])
    return int(keys.size)


@dataclass(frozen=True)
class GroupTask:
    """One key range of the group-by: ``part`` of ``parts``, over the shards listed."""

    part: int
    parts: int
    shards: tuple[int, ...]
    work_dir: str
    minhash: MinHashConfig


@dataclass
class GroupResult:
    """Verified pairs (n, 2) uint64 (smaller id first) and counters of one key range."""

    pairs: np.ndarray
    records: int = 0
    candidates: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def num_parts(records: int, group_bytes: int, workers: int) -> int:
    """Key ranges for ``records`` band records: at most ``group_bytes`` each on average."""
    return max(1, workers, -(-records * 16 // max(group_bytes, 1)))


def _key_bounds(part: int, parts: int) -> tuple[np.uint64, np.uint64 | None]:
    lo = (part << 64) // parts
    hi = ((part + 1) << 64) // parts
    return np.uint64(lo), (np.uint64(hi) if hi < 1 << 64 else None)


class SignatureReader:
    """Rows of the shards' signatures by sample id (memory-mapped, opened once per shard)."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.maps: dict[int, np.ndarray] = {}

    def rows(self, ids: np.ndarray) -> np.ndarray:
        shards = (ids >> np.uint64(32)).astype(np.int64)
        local = (ids & _LOCAL).astype(np.int64)
        out: np.ndarray | None = None
        for shard in np.unique(shards).tolist():
            if shard not in self.maps:
                self.maps[shard] = np.load(shard_file(self.work_dir, shard, "sig"), mmap_mode="r")
            sig = self.maps[shard]
            if out is None:
                out = np.empty((ids.size, sig.shape[1]), dtype=sig.dtype)
            where = shards == shard
            out[where] = sig[local[where]]
        return out if out is not None else np.empty((0, 0), dtype=np.uint32)


def candidate_pairs(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Star pairs (bucket's smallest id, other id) of every bucket of equal keys, unique."""
    if keys.size < 2:
        return np.empty((0, 2), dtype=np.uint64)
    order = np.lexsort((ids, keys))
    keys, ids = keys[order], ids[order]
    head = np.ones(keys.size, dtype=bool)
    head[1:] = keys[1:] != keys[:-1]
    first = ids[head][np.cumsum(head) - 1]
    member = ~head & (first != ids)
    if not member.any():
        return np.empty((0, 2), dtype=np.uint64)
    return np.unique(np.stack([first[member], ids[member]], axis=1), axis=0)


def group_partition(task: GroupTask, _config: object = None) -> GroupResult:
    """Group-by of one key range: candidate pairs, verified (see the module docstring)."""
    started = time.perf_counter()
    lo, hi = _key_bounds(task.part, task.parts)
    key_parts, id_parts = [], []
    for shard in task.shards:
        keys = np.load(shard_file(task.work_dir, shard, "key"), mmap_mode="r")
        start = int(np.searchsorted(keys, lo, side="left"))
        end = keys.size if hi is None else int(np.searchsorted(keys, hi, side="left"))
        if end > start:
            key_parts.append(np.array(keys[start:end]))
            ids = np.load(shard_file(task.work_dir, shard, "id"), mmap_mode="r")
            id_parts.append(np.array(ids[start:end]))
    if not key_parts:
        return GroupResult(np.empty((0, 2), dtype=np.uint64))
    keys, ids = np.concatenate(key_parts), np.concatenate(id_parts)
    pairs = candidate_pairs(keys, ids)
    grouped = time.perf_counter()
    result = GroupResult(pairs, records=int(keys.size), candidates=int(pairs.shape[0]))
    if task.minhash.verify and pairs.size:
        reader = SignatureReader(task.work_dir)
        keep = np.zeros(pairs.shape[0], dtype=bool)
        for start in range(0, pairs.shape[0], VERIFY_BLOCK):
            block = pairs[start : start + VERIFY_BLOCK]
            similar = estimated_jaccard(reader.rows(block[:, 0]), reader.rows(block[:, 1]))
            keep[start : start + block.shape[0]] = similar >= task.minhash.threshold
        result.pairs = pairs[keep]
    result.seconds = {
        "dedup_group": grouped - started,
        "dedup_verify": time.perf_counter() - grouped,
    }
    return result


def component_roots(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, root of each node): root = smallest id in the node's connected component."""
    if pairs.size == 0:
        empty = np.empty(0, dtype=np.uint64)
        return empty, empty
    nodes, inverse = np.unique(pairs.ravel(), return_inverse=True)
    a, b = inverse.reshape(-1, 2).T
    label = np.arange(nodes.size, dtype=np.int64)
    while True:
        before = label.copy()
        np.minimum.at(label, a, label[b])
        np.minimum.at(label, b, label[a])
        while True:  # pointer jumping: follow labels to their fixed point
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            return nodes, nodes[label]


@dataclass
class DedupOutcome:
    """Which samples to drop (sorted ids) and what was found."""

    dropped: np.ndarray
    counts: dict[str, int]

    def dropped_in(self, shard: int) -> np.ndarray:
        """Positions (within ``shard``) of the dropped samples of that shard, sorted."""
        lo = np.uint64(shard) << np.uint64(32)
        hi = np.uint64(shard + 1) << np.uint64(32)
        start, end = np.searchsorted(self.dropped, [lo, hi])
        return (self.dropped[start:end] & _LOCAL).astype(np.int64)


def resolve(results: list[GroupResult], first_repo_shard: int) -> DedupOutcome:
    """Connected components of all verified pairs -> the samples to drop, and counters."""
    pairs = (
        np.concatenate([r.pairs for r in results]) if results else np.empty((0, 2), dtype=np.uint64)
    )
    if pairs.size:  # a pair met in several key ranges (several shared bands) counts once
        pairs = np.unique(pairs, axis=0)
    nodes, roots = component_roots(pairs)
    dropped = nodes[nodes != roots]
    repo_level = int(np.count_nonzero((dropped >> np.uint64(32)) >= np.uint64(first_repo_shard)))
    counts = {
        "band_records": sum(r.records for r in results),
        "group_partitions": len(results),
        "candidate_pairs": sum(r.candidates for r in results),
        "verified_pairs": int(pairs.shape[0]),
        "clusters": int(np.unique(roots).size),
        "samples_in_clusters": int(nodes.size),
        "dropped": int(dropped.size),
        "dropped_repo_level": repo_level,
        "dropped_file_level": int(dropped.size) - repo_level,
    }
    return DedupOutcome(dropped, counts)
