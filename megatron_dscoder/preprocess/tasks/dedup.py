"""The near-dedup as tasks whose results stay on disk: the driver sees counts, never pairs.

The steps and their bounds are described in :mod:`megatron_dscoder.preprocess.dedup`, the files
under ``dedup/`` in :mod:`megatron_dscoder.preprocess.cluster.layout`: ``merge_band`` writes the
star pairs of one band and key range, ``verify_range`` the unique verified pairs of one id range,
``components`` the sorted ids to drop. ``finalize`` tasks memory-map those and take their shard's
slice (:func:`dropped_in_shard`, a binary search).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron_dscoder.preprocess.cluster import layout
from megatron_dscoder.preprocess.cluster.engine import Engine, make_engine
from megatron_dscoder.preprocess.cluster.layout import (
    band_file,
    dedup_dir,
    dropped_file,
    pairs_file,
    save_array,
    shard_file,
    verified_file,
)
from megatron_dscoder.preprocess.cluster.markers import Step, TaskCounts, run_steps
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.dedup import (
    LOCAL_MASK,
    band_ranges,
    band_records,
    candidate_pairs,
    dropped_samples,
    unique_pairs,
    verify_pairs,
    write_band_file,
)
from megatron_dscoder.preprocess.inputs.plan import CHUNKS_PER_REF
from megatron_dscoder.preprocess.stages.base import WorkerContext
from megatron_dscoder.preprocess.stages.minhash import MinHashConfig, band_layout


@dataclass(frozen=True)
class Producers:
    """The tasks that wrote band files: pass-1 references ``0..refs-1`` and the pass-2 tasks
    of shards ``first_region .. first_region + regions - 1``."""

    refs: int
    first_region: int
    regions: int

    def files(self, work_dir: str) -> list[str]:
        names = [layout.pass1_bands(i) for i in range(self.refs)]
        names += [layout.pass2_bands(self.first_region + i) for i in range(self.regions)]
        return [band_file(work_dir, name) for name in names]


@dataclass(frozen=True)
class BandTask:
    band: int
    key_ranges: int
    producers: Producers


def merge_band(task: BandTask, ctx: WorkerContext) -> dict[str, Any]:
    """One band over every task's band file -> its star pairs, one file per key range."""
    started = time.perf_counter()
    records = candidates = 0
    files = task.producers.files(ctx.work_dir)
    ranges = band_ranges(files, task.band, task.key_ranges, dedup_dir(ctx.work_dir))
    for key_range, (keys, ids) in enumerate(ranges):
        pairs = candidate_pairs(keys, ids)
        records += int(keys.size)
        candidates += int(pairs.shape[0])
        save_array(pairs_file(ctx.work_dir, task.band, key_range), np.ascontiguousarray(pairs.T))
    seconds = {"dedup_merge": time.perf_counter() - started}
    return {"records": records, "candidates": candidates, "seconds": seconds}


@dataclass(frozen=True)
class VerifyTask:
    """Pairs whose smaller id lies in shards ``[first_shard, end_shard)``."""

    index: int
    first_shard: int
    end_shard: int
    bands: int
    key_ranges: int


def verify_range(task: VerifyTask, ctx: WorkerContext) -> dict[str, Any]:
    """Every band's pairs of the range, each pair once, verified -> ``verified/vNNNNN.npy``."""
    started = time.perf_counter()
    bounds = np.array([task.first_shard, task.end_shard], dtype=np.uint64) << np.uint64(32)
    found = []
    for band in range(task.bands):
        for key_range in range(task.key_ranges):
            smaller, other = np.load(pairs_file(ctx.work_dir, band, key_range), mmap_mode="r")
            start, end = np.searchsorted(smaller, bounds).tolist()
            found.append(np.stack([smaller[start:end], other[start:end]], axis=1))
    pairs = unique_pairs(np.concatenate(found)) if found else np.empty((0, 2), np.uint64)
    grouped = time.perf_counter()
    minhash = ctx.options.dedup
    assert minhash is not None  # dedup tasks run only when dedup is on
    verified = verify_pairs(pairs, ctx.work_dir, minhash.threshold) if minhash.verify else pairs
    save_array(verified_file(ctx.work_dir, task.index), verified)
    seconds = {"dedup_unique": grouped - started, "dedup_verify": time.perf_counter() - grouped}
    return {"unique": int(pairs.shape[0]), "verified": int(verified.shape[0]), "seconds": seconds}


def verify_tasks(shards: list[int], count: int, bands: int, key_ranges: int) -> list[VerifyTask]:
    """``count`` tasks over consecutive groups of ``shards`` (sorted, those with samples)."""
    count = max(1, min(count, len(shards)))
    cuts = [len(shards) * i // count for i in range(count + 1)]
    return [
        VerifyTask(
            i,
            shards[cuts[i]],
            shards[cuts[i + 1]] if i + 1 < count else shards[-1] + 1,
            bands,
            key_ranges,
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class ComponentsTask:
    verify_tasks: int
    first_repo_shard: int


def components(task: ComponentsTask, ctx: WorkerContext) -> dict[str, Any]:
    """Connected components over all verified pairs -> ``dedup/dropped.npy``.

    The pairs are unique already (each lives in the range of its smaller id, once)."""
    work_dir = ctx.work_dir
    parts = [np.load(verified_file(work_dir, i)) for i in range(task.verify_tasks)]
    pairs = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.uint64)
    dropped, counts = dropped_samples(pairs, task.first_repo_shard)
    save_array(dropped_file(work_dir), dropped)
    return {"verified_pairs": int(pairs.shape[0]), **counts}


def deduplicate(
    minhash: MinHashConfig,
    group_bytes: int,
    engine: Engine,
    work_dir: str,
    shards: list[tuple[int, int, int]],
    first_repo: int,
    tasks: TaskCounts,
    seconds: Counter[str],
) -> dict[str, int]:
    """Merge each band, verify each id range, then the connected components, as tasks; returns
    the counters (the dropped ids stay in ``dedup/dropped.npy``).

    ``shards`` are (index, documents, band records) of every shard, pass-2 shards from
    ``first_repo`` on; ``seconds`` gets the tasks' seconds per step."""
    bands = band_layout(minhash)[0]
    regions = sum(1 for index, _, _ in shards if index >= first_repo)
    producers = Producers(first_repo // CHUNKS_PER_REF, first_repo, regions)
    records = sum(records for _, _, records in shards)
    key_ranges = max(1, -(-records * 16 // (bands * group_bytes)))
    merges = [
        Step(layout.band_task(band, key_ranges), merge_band, BandTask(band, key_ranges, producers))
        for band in range(bands)
    ]
    counts = Counter({"band_records": 0, "candidate_pairs": 0, "unique_candidate_pairs": 0})
    for _, result in run_steps(engine, merges, work_dir, tasks):
        counts["band_records"] += result["records"]
        counts["candidate_pairs"] += result["candidates"]
        seconds.update(result["seconds"])
    with_records = [index for index, _, records in shards if records]
    wanted = -(-counts["candidate_pairs"] * 16 // group_bytes)
    ranges = verify_tasks(with_records, wanted, bands, key_ranges) if with_records else []
    verifies = [
        Step(layout.verify_task(task.index, len(ranges)), verify_range, task) for task in ranges
    ]
    for _, result in run_steps(engine, verifies, work_dir, tasks):
        counts["unique_candidate_pairs"] += result["unique"]
        seconds.update(result["seconds"])
    step = Step(
        layout.components_task(len(verifies)), components, ComponentsTask(len(verifies), first_repo)
    )
    summary = {"band_tasks": bands, "key_ranges": key_ranges, "verify_tasks": len(verifies)}
    for _, result in run_steps(engine, [step], work_dir, tasks):
        summary.update(counts, **result)
    return summary


def _no_setup(_: object) -> None:
    """Dedup workers load nothing."""


def deduplicate_shards(
    work_dir: str,
    shards: list[np.ndarray],
    minhash: MinHashConfig,
    group_bytes: int,
    workers: int = 1,
    seconds: Counter[str] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """The whole dedup over signature rows given per shard (each shard a task of its own, as
    pass 2 writes them), in ``work_dir``, on a local engine: (sorted dropped ids, counters).
    For benchmarks and tests of the production path without a corpus; ``seconds`` gets the
    seconds of each step (``dedup_band_files`` for writing the band files)."""
    seconds = Counter() if seconds is None else seconds
    started = time.perf_counter()
    layout.make_dirs(work_dir)
    bands = band_layout(minhash)[0]
    made = []
    for shard, sig in enumerate(shards):
        save_array(shard_file(work_dir, shard, "sig"), sig)
        signed = [band_records(shard, sig, minhash)]
        records = write_band_file(band_file(work_dir, layout.pass2_bands(shard)), signed, bands)
        made.append((shard, sig.shape[0], records))
    seconds["dedup_band_files"] += time.perf_counter() - started
    options = PreprocessConfig(inputs=("-",), tokenizer_model="-", output_prefix="-", dedup=minhash)
    stage = WorkerContext(options, eos=0, dtype="uint16", buckets=1, work_dir=work_dir)
    engine = make_engine("local", workers, stage, _no_setup)
    try:
        counts = deduplicate(minhash, group_bytes, engine, work_dir, made, 0, TaskCounts(), seconds)
    finally:
        engine.close()
    return np.load(dropped_file(work_dir)), counts


def dropped_in_shard(work_dir: str, shard: int) -> np.ndarray:
    """Positions in ``shard`` of its near-duplicates to drop, sorted (memory-mapped search)."""
    dropped = np.load(dropped_file(work_dir), mmap_mode="r")
    lo = np.uint64(shard) << np.uint64(32)
    hi = np.uint64(shard + 1) << np.uint64(32)
    start, end = np.searchsorted(dropped, [lo, hi])
    return (np.asarray(dropped[start:end]) & LOCAL_MASK).astype(np.int64)
