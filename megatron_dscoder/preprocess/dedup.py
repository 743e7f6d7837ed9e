"""Near-dedup on disk: band files per task, one merge per band, verification by id range.

MinHash near-dedup in the formulation that scales out (BigCode's, without an in-memory index);
the tasks that run these steps are in :mod:`megatron_dscoder.preprocess.tasks.dedup`:

1. **Signatures and band files** (every pass-1 and pass-2 task;
   :mod:`megatron_dscoder.preprocess.stages.minhash`): each sample
   gets ``num_perm`` MinHash values over its word 5-grams, saved per shard
   (``sNNNNNNN.sig.npy``), cut into ``bands`` bands of ``rows`` values; each band becomes one
   64-bit key, hash(band index, band values). A task writes *one* band file for all its
   shards (:func:`write_band_file`): ``(bands, 2, n)`` uint64, row ``[b, 0]`` the keys of band
   ``b`` sorted, row ``[b, 1]`` the sample ids. A sample id is ``shard << 32 | position``, so
   ids increase in output order.
2. **Merge, one task per band** (:func:`band_ranges` and :func:`candidate_pairs`, run by
   ``merge_band``): reads its band's rows of every task's band file (one open per file), cut into
   ``key_ranges`` ranges of about ``group_bytes`` each through scratch files when the band is large;
   in each range it links every sample of a run of equal keys to the run's smallest id (a star:
   n - 1 candidate pairs per bucket, not n^2/2) and writes the pairs sorted by the smaller id.
3. **Verification, one task per id range**: the pairs whose smaller id falls in its range,
   from every band's files (a binary search on memory maps); a pair met in several bands is
   kept once, *before* its signatures are read, so each candidate pair is verified once; it
   is kept if the signatures agree in at least ``threshold`` of their positions (the MinHash
   estimate of Jaccard similarity).
4. **Connected components** of the verified pairs (unique by construction), one task:
   deterministic label propagation with pointer jumping; every node ends with the smallest id
   of its component, which is kept (its first sample in output order); the others are
   dropped when the shards are finalised.

**Memory and files.** A merge task holds one key range of one band (about ``group_bytes`` of
16-byte records, about 3x that while sorting) and its star pairs; a verification task its
pairs and ``VERIFY_BLOCK`` x 2 x num_perm x 4 bytes (64 MiB) of signature rows, with at most
:data:`OPEN_SIGNATURES` signature files mapped at once; the components task 16 bytes per
verified pair and about 40 bytes per distinct sample in a pair (it grows with the number of
near-duplicates, not with the corpus). Files opened: every band file once per band (``bands``
x tasks), every band's pair files once per verification task, no per-shard key file. Disk:
``num_perm x 4 + bands x 16`` bytes per sample (1.6 KB with the defaults).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from megatron_dscoder.preprocess.cluster.layout import save_array, shard_file
from megatron_dscoder.preprocess.config import MinHashConfig
from megatron_dscoder.preprocess.stages.minhash import (
    EMPTY,
    band_keys,
    band_layout,
    estimated_jaccard,
)

VERIFY_BLOCK = 1 << 15
#: Signature files a verification task keeps memory-mapped (each holds a file descriptor).
OPEN_SIGNATURES = 256
#: A sample id is ``shard << 32 | position``; this masks the position.
LOCAL_MASK = np.uint64(0xFFFFFFFF)
Signed = tuple[np.ndarray, np.ndarray]


def band_records(shard: int, sig: np.ndarray, config: MinHashConfig) -> Signed:
    """(sample ids, (n, bands) band keys) of the shard's samples that have a signature (a text
    without words has none)."""
    present = np.flatnonzero((sig != EMPTY).any(axis=1))
    ids = (np.uint64(shard) << np.uint64(32)) | present.astype(np.uint64)
    return ids, band_keys(sig[present], *band_layout(config))


def write_band_file(path: str, signed: list[Signed], bands: int) -> int:
    """One task's band file from its shards' :func:`band_records`; returns its record count."""
    ids = np.concatenate([i for i, _ in signed]) if signed else np.empty(0, np.uint64)
    keys = np.concatenate([k for _, k in signed]) if signed else np.empty((0, bands), np.uint64)
    out = np.empty((bands, 2, ids.size), dtype=np.uint64)  # [band, key|id, sample]
    for band in range(bands):
        order = np.lexsort((ids, keys[:, band]))
        out[band, 0], out[band, 1] = keys[order, band], ids[order]
    save_array(path, out)
    return int(ids.size) * bands


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
    return unique_pairs(np.stack([first[member], ids[member]], axis=1))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """(n, 2) pairs sorted by (first, second), each once."""
    if pairs.shape[0] < 2:
        return pairs
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    new = np.ones(pairs.shape[0], dtype=bool)
    new[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
    return pairs[new]


def key_bounds(ranges: int) -> np.ndarray:
    """The ``ranges - 1`` inner boundaries cutting the 64-bit key space into equal ranges."""
    return np.array([(r << 64) // ranges for r in range(1, ranges)], dtype=np.uint64)


def band_ranges(
    files: list[str], band: int, ranges: int, scratch_dir: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(keys, ids) of one band of every file, one key range at a time (``ranges`` of them).

    With one range, the rows are read into memory; with more, one pass over the files appends
    each range's slice to its own scratch file (``ranges`` files open), which is then read
    back: every band file is opened once, whatever the number of ranges.
    """
    if ranges == 1:
        parts = [np.load(path, mmap_mode="r")[band] for path in files]
        yield (
            np.concatenate([np.asarray(p[0]) for p in parts] or [np.empty(0, np.uint64)]),
            np.concatenate([np.asarray(p[1]) for p in parts] or [np.empty(0, np.uint64)]),
        )
        return
    scratch = tempfile.mkdtemp(prefix=f"b{band:03d}.tmp-", dir=scratch_dir)
    try:
        bounds = key_bounds(ranges)
        outs = [open(os.path.join(scratch, f"{r:05d}"), "wb") for r in range(ranges)]
        try:
            for path in files:
                keys, ids = np.load(path, mmap_mode="r")[band]
                cuts = [0, *np.searchsorted(keys, bounds).tolist(), keys.size]
                for r, out in enumerate(outs):
                    if cuts[r + 1] > cuts[r]:
                        np.stack(
                            [keys[cuts[r] : cuts[r + 1]], ids[cuts[r] : cuts[r + 1]]], axis=1
                        ).tofile(out)
        finally:
            for out in outs:
                out.close()
        for r in range(ranges):
            records = np.fromfile(os.path.join(scratch, f"{r:05d}"), dtype=np.uint64)
            records = records.reshape(-1, 2)
            yield records[:, 0].copy(), records[:, 1].copy()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class SignatureReader:
    """Rows of the shards' signatures by sample id (memory-mapped, at most
    :data:`OPEN_SIGNATURES` files at once, least recently used closed first)."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def _map(self, shard: int) -> np.ndarray:
        if shard in self.maps:
            self.maps.move_to_end(shard)
        else:
            if len(self.maps) >= OPEN_SIGNATURES:
                self.maps.popitem(last=False)
            self.maps[shard] = np.load(shard_file(self.work_dir, shard, "sig"), mmap_mode="r")
        return self.maps[shard]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        shards = (ids >> np.uint64(32)).astype(np.int64)
        local = (ids & LOCAL_MASK).astype(np.int64)
        out: np.ndarray | None = None
        for shard in np.unique(shards).tolist():
            sig = self._map(shard)
            if out is None:
                out = np.empty((ids.size, sig.shape[1]), dtype=sig.dtype)
            where = shards == shard
            out[where] = sig[local[where]]
        return out if out is not None else np.empty((0, 0), dtype=np.uint32)


def verify_pairs(pairs: np.ndarray, work_dir: str, threshold: float) -> np.ndarray:
    """The pairs whose signatures agree in at least ``threshold`` of their positions."""
    reader = SignatureReader(work_dir)
    keep = np.zeros(pairs.shape[0], dtype=bool)
    for start in range(0, pairs.shape[0], VERIFY_BLOCK):
        block = pairs[start : start + VERIFY_BLOCK]
        similar = estimated_jaccard(reader.rows(block[:, 0]), reader.rows(block[:, 1]))
        keep[start : start + block.shape[0]] = similar >= threshold
    return pairs[keep]


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


def dropped_samples(pairs: np.ndarray, first_repo_shard: int) -> tuple[np.ndarray, dict[str, int]]:
    """Connected components of the verified pairs -> the sorted ids to drop, and counters."""
    nodes, roots = component_roots(pairs)
    dropped = nodes[nodes != roots]
    repo_level = int(np.count_nonzero((dropped >> np.uint64(32)) >= np.uint64(first_repo_shard)))
    counts = {
        "clusters": int(np.unique(roots).size),
        "samples_in_clusters": int(nodes.size),
        "dropped": int(dropped.size),
        "dropped_repo_level": repo_level,
        "dropped_file_level": int(dropped.size) - repo_level,
    }
    return dropped, counts
