"""The near-dedup as tasks whose results stay on disk: the driver sees counts, never pairs.

``group``       one key range (:func:`.dedup.group_partition`): its verified pairs are written
                to ``dedup/pairs-P-of-N.npy``;
``components``  one task reads every range's pairs, removes the pairs met in several ranges
                (two samples sharing several bands), runs the connected components
                (:func:`.dedup.resolve`) and writes the sorted ids to drop to
                ``dedup/dropped.npy``;
``finalize``    each shard task memory-maps that file and takes its own slice
                (:func:`dropped_in_shard`, a binary search).

Bound: the components task holds all verified pairs (16 bytes each) and about 40 bytes per
distinct sample in a pair while labelling, i.e. it grows with the number of near-duplicates
(about 1 GB per 20 M near-duplicate pairs), not with the corpus; it runs on one worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron_dscoder.preprocess.dedup import (
    GroupResult,
    GroupTask,
    group_partition,
    resolve,
    save_array,
)
from megatron_dscoder.preprocess.stages import StageConfig

_LOCAL = np.uint64(0xFFFFFFFF)


def dedup_dir(work_dir: str) -> str:
    return os.path.join(work_dir, "dedup")


def pairs_path(work_dir: str, part: int, parts: int) -> str:
    return os.path.join(dedup_dir(work_dir), f"pairs-{part:05d}-of-{parts:05d}.npy")


def group(task: GroupTask, config: StageConfig) -> dict[str, Any]:
    """One key range of the group-by; its verified pairs go to a file."""
    result = group_partition(task, config)
    save_array(pairs_path(task.work_dir, task.part, task.parts), result.pairs)
    return {"records": result.records, "candidates": result.candidates, "seconds": result.seconds}


@dataclass(frozen=True)
class ComponentsTask:
    parts: int
    first_repo_shard: int
    group_results: tuple[tuple[int, int], ...]  # (records, candidates) per range, in order


def components(task: ComponentsTask, config: StageConfig) -> dict[str, Any]:
    """Connected components over the unique verified pairs -> ``dedup/dropped.npy``."""
    work_dir = config.work_dir
    results = [
        GroupResult(np.load(pairs_path(work_dir, part, task.parts)), records, candidates)
        for part, (records, candidates) in enumerate(task.group_results)
    ]
    outcome = resolve(results, task.first_repo_shard)
    save_array(os.path.join(dedup_dir(work_dir), "dropped.npy"), outcome.dropped)
    return outcome.counts


def dropped_in_shard(work_dir: str, shard: int) -> np.ndarray:
    """Positions in ``shard`` of its near-duplicates to drop, sorted (memory-mapped search)."""
    path = os.path.join(dedup_dir(work_dir), "dropped.npy")
    dropped = np.load(path, mmap_mode="r")
    lo = np.uint64(shard) << np.uint64(32)
    hi = np.uint64(shard + 1) << np.uint64(32)
    start, end = np.searchsorted(dropped, [lo, hi])
    return (np.asarray(dropped[start:end]) & _LOCAL).astype(np.int64)
