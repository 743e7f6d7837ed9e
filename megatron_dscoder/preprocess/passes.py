"""The tasks of a run, as workers run them: each reads its own input and writes its own files.

Every function here takes one small, picklable item (references: paths, byte ranges, numbers)
and the :class:`.stages.StageConfig`, writes its files into the work directory under temporary
names renamed when complete, never deletes its inputs, and returns a small JSON-able dict (counts
and paths) that :mod:`.markers` also stores as the task's completion marker::

    pass 1   run_ref(ref)        read an input reference (:mod:`.plan`) chunk by chunk; each chunk
                                 a shard; repository-level records into one spill file of the
                                 task, its buckets in order (``spill/rNNNNNNN``, offsets returned)
    pass 2a  plan_bucket(b)      a bucket over ``region_bytes``: its pieces copied into one file
                                 and cut into regions (:func:`.spill.plan_regions`)
    pass 2   run_region(region)  Algorithm 1 samples of one region -> a shard
             (with dedup, each pass-1 and pass-2 task also writes one band file)
    dedup    :mod:`.dedup_tasks`
    finish   finalize(shards)    64 shards without near-duplicates -> ``shards/shard-N.bin/.idx``
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron_dscoder.preprocess.dedup import Signed, band_file, write_band_file
from megatron_dscoder.preprocess.plan import CHUNKS_PER_REF, InputRef, expand
from megatron_dscoder.preprocess.shards import (
    FinalizeTask,
    ShardResult,
    ShardTask,
    finalize_shard,
    run_shard,
)
from megatron_dscoder.preprocess.spill import Region, SpillWriter, plan_regions
from megatron_dscoder.preprocess.stages import StageConfig
from megatron_dscoder.preprocess.stats import PartitionStats

COPY_BLOCK = 16 << 20


def stats_to_json(stats: PartitionStats) -> dict[str, Any]:
    """Counters as ``[key, count]`` lists (some keys are tuples, which JSON objects refuse)."""
    return {
        f.name: list(value.items()) if isinstance(value, Counter) else value
        for f in dataclasses.fields(stats)
        for value in (getattr(stats, f.name),)
    }


def stats_from_json(data: dict[str, Any]) -> PartitionStats:
    return PartitionStats(
        **{
            k: Counter({tuple(a) if isinstance(a, list) else a: n for a, n in v})
            if isinstance(v, list)
            else v
            for k, v in data.items()
        }
    )


def spill_dir(config: StageConfig) -> str:
    return os.path.join(config.work_dir, "spill")


def write_bands(name: str, signed: list[Signed], config: StageConfig) -> None:
    """The task's band file (one for all its shards), when dedup is on."""
    if config.options.dedup is not None:
        bands = config.options.dedup.band_layout()[0]
        write_band_file(band_file(config.work_dir, name), signed, bands)


def _records(result: ShardResult, config: StageConfig) -> int:
    """Band records of a shard (samples with a signature x bands)."""
    if result.signed is None or config.options.dedup is None:
        return 0
    return int(result.signed[0].size) * config.options.dedup.band_layout()[0]


@dataclass(frozen=True)
class RefTask:
    index: int
    ref: InputRef


def run_ref(task: RefTask, config: StageConfig) -> dict[str, Any]:
    """Pass 1 over one input reference; returns its shards, spill offsets and counters."""
    options = config.options
    stats = PartitionStats()
    chunks, signed = [], []
    scratch = tempfile.mkdtemp(prefix=f"r{task.index:07d}.tmp-", dir=spill_dir(config))
    writer = SpillWriter(scratch)
    works = expand(task.ref, options.task_bytes, options.max_record_bytes, stats.bad, stats.skipped)
    for chunk, work in enumerate(works):
        if chunk >= CHUNKS_PER_REF:
            raise ValueError(f"input {task.ref} has over {CHUNKS_PER_REF} tasks; cut it finer")
        shard = task.index * CHUNKS_PER_REF + chunk
        result = run_shard(ShardTask(shard, work), config)
        for bucket in sorted(result.spill):
            writer.add(bucket, result.spill[bucket])
        stats.merge(result.stats)
        chunks.append([shard, result.documents, _records(result, config), work.input_bytes])
        signed += [result.signed] if result.signed is not None else []
    writer.flush()
    write_bands(f"p1-{task.index:07d}", signed, config)
    final = os.path.join(spill_dir(config), f"r{task.index:07d}")
    spill = []
    with open(f"{final}.{os.getpid()}.partial", "wb") as out:
        for bucket in sorted(writer.sizes):
            start = out.tell()
            with open(writer.path(bucket), "rb") as f:
                shutil.copyfileobj(f, out, COPY_BLOCK)
            spill.append([bucket, start, out.tell()])
    os.replace(f"{final}.{os.getpid()}.partial", final)
    shutil.rmtree(scratch)
    return {"chunks": chunks, "spill": spill, "stats": stats_to_json(stats)}


@dataclass(frozen=True)
class BucketTask:
    bucket: int
    parts: tuple[tuple[str, int, int], ...]


def plan_bucket(task: BucketTask, config: StageConfig) -> dict[str, Any]:
    """Regions of one large bucket: its pieces joined into ``spill/bNNNNN.d/`` and re-split."""
    name = f"b{task.bucket:05d}"
    final = os.path.join(spill_dir(config), f"{name}.d")
    scratch = tempfile.mkdtemp(prefix=f"{name}.d.tmp-", dir=spill_dir(config))
    joined = os.path.join(scratch, name)
    with open(joined, "wb") as out:
        for path, start, end in task.parts:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start
                while left > 0 and (data := f.read(min(COPY_BLOCK, left))):
                    out.write(data)
                    left -= len(data)
    planned: dict[str, int] = {}
    options = config.options
    regions = list(plan_regions(joined, options.region_bytes, options.max_region_bytes, 0, planned))
    shutil.rmtree(final, ignore_errors=True)  # an attempt killed between its rename and marker
    os.rename(scratch, final)
    return {
        "regions": [
            [os.path.join(final, os.path.basename(r.path)), r.start, r.end, r.windowed]
            for r in regions
        ],
        "planned": planned,
    }


@dataclass(frozen=True)
class RegionTask:
    index: int
    region: Region


def run_region(task: RegionTask, config: StageConfig) -> dict[str, Any]:
    """Pass 2 over one region; returns its shard and counters."""
    result = run_shard(ShardTask(task.index, task.region), config)
    write_bands(
        f"p2-{task.index:010d}", [result.signed] if result.signed is not None else [], config
    )
    chunk = [task.index, result.documents, _records(result, config), task.region.size]
    return {"chunks": [chunk], "stats": stats_to_json(result.stats)}


@dataclass(frozen=True)
class DropTask:
    """Consecutive shards to finalise (:data:`FINALIZE_BATCH` at most, so that a corpus of a
    million shards is not a million tasks); their near-duplicates are read from
    ``dedup/dropped.npy`` when ``dedup``."""

    shards: tuple[int, ...]
    dedup: bool


FINALIZE_BATCH = 64


def finalize(task: DropTask, config: StageConfig) -> dict[str, Any]:
    """Finalise each shard; per shard [index, documents, tokens, files] written."""
    from megatron_dscoder.preprocess.dedup_tasks import dropped_in_shard

    written = []
    for index in task.shards:
        dropped = np.empty(0, dtype=np.int64)
        if task.dedup:
            dropped = dropped_in_shard(config.work_dir, index)
        written.append([index, *finalize_shard(FinalizeTask(index, dropped), config)])
    return {"shards": written}
