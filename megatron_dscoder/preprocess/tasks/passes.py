"""The tasks of a run, as workers run them: each reads its own input and writes its own files.

Every function here takes one small, picklable item (references: paths, byte ranges, numbers)
and the :class:`~megatron_dscoder.preprocess.stages.base.WorkerContext`, writes its files into
the work directory (:mod:`megatron_dscoder.preprocess.cluster.layout`) under temporary names
renamed when complete, never deletes its inputs, and returns a small JSON-able dict (counts and
paths) that :mod:`megatron_dscoder.preprocess.cluster.markers` also stores as the task's
completion marker::

    pass 1   run_ref(ref)        read an input reference chunk by chunk; each chunk a shard;
                                 repository-level records into one spill file of the task,
                                 its buckets in order (``spill/rNNNNNNN``, offsets returned)
    pass 2a  plan_bucket(b)      a bucket over ``region_bytes``: its pieces copied into one
                                 file and cut into regions (``repo.spill.plan_regions``)
    pass 2   run_region(region)  Algorithm 1 samples of one region -> a shard
             (with dedup, each pass-1 and pass-2 task also writes one band file)
    dedup    the tasks of :mod:`megatron_dscoder.preprocess.tasks.dedup`
    finish   finalize(shards)    64 shards without near-duplicates -> ``shards/shard-N.bin/.idx``
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from megatron_dscoder.preprocess.cluster import integrity, layout
from megatron_dscoder.preprocess.dedup import Signed, write_band_file
from megatron_dscoder.preprocess.inputs.plan import CHUNKS_PER_REF, InputRef, RepoDirs, expand
from megatron_dscoder.preprocess.repo.spill import Region, SpillWriter, plan_regions
from megatron_dscoder.preprocess.stages.base import WorkerContext
from megatron_dscoder.preprocess.stages.minhash import band_layout
from megatron_dscoder.preprocess.stats import PartitionStats, stats_to_json
from megatron_dscoder.preprocess.tasks.dedup import dropped_in_shard
from megatron_dscoder.preprocess.tasks.shards import (
    ShardDrops,
    ShardResult,
    ShardTask,
    finalize_shard,
    run_shard,
)

COPY_BLOCK = 16 << 20


def write_bands(name: str, signed: list[Signed], ctx: WorkerContext) -> None:
    """The task's band file (one for all its shards), when dedup is on."""
    if ctx.options.dedup is not None:
        bands = band_layout(ctx.options.dedup)[0]
        write_band_file(layout.band_file(ctx.work_dir, name), signed, bands)


def _records(result: ShardResult, ctx: WorkerContext) -> int:
    """Band records of a shard (samples with a signature x bands)."""
    if result.signed is None or ctx.options.dedup is None:
        return 0
    return int(result.signed[0].size) * band_layout(ctx.options.dedup)[0]


@dataclass(frozen=True)
class RefTask:
    index: int
    ref: InputRef


def run_ref(task: RefTask, ctx: WorkerContext) -> dict[str, Any]:
    """Pass 1 over one input reference; returns its shards, spill offsets and counters (and
    for repositories of a checkout directory, the state of their files as it starts)."""
    options = ctx.options
    inputs = []
    if isinstance(task.ref, RepoDirs):
        inputs.append([task.ref.source, integrity.repos_state(task.ref.source, task.ref.repos)])
    stats = PartitionStats()
    chunks, signed = [], []
    spill_dir = layout.spill_dir(ctx.work_dir)
    scratch = tempfile.mkdtemp(prefix=f"{layout.spill_name(task.index)}.tmp-", dir=spill_dir)
    writer = SpillWriter(scratch)
    works = expand(task.ref, options.task_bytes, options.max_record_bytes, stats.bad, stats.skipped)
    for chunk, work in enumerate(works):
        if chunk >= CHUNKS_PER_REF:
            raise ValueError(f"input {task.ref} has over {CHUNKS_PER_REF} tasks; cut it finer")
        shard = task.index * CHUNKS_PER_REF + chunk
        result = run_shard(ShardTask(shard, work), ctx)
        for bucket in sorted(result.spill):
            writer.add(bucket, result.spill[bucket])
        stats.merge(result.stats)
        chunks.append([shard, result.documents, _records(result, ctx), work.input_bytes])
        signed += [result.signed] if result.signed is not None else []
    writer.flush()
    write_bands(layout.pass1_bands(task.index), signed, ctx)
    spill: list[list[int]] = []

    def join_buckets(out: IO[bytes]) -> None:
        for bucket in sorted(writer.sizes):
            start = out.tell()
            with open(writer.path(bucket), "rb") as f:
                shutil.copyfileobj(f, out, COPY_BLOCK)
            spill.append([bucket, start, out.tell()])

    layout.atomic_write(layout.spill_file(ctx.work_dir, task.index), join_buckets)
    shutil.rmtree(scratch)
    return {"chunks": chunks, "spill": spill, "stats": stats_to_json(stats), "inputs": inputs}


@dataclass(frozen=True)
class BucketTask:
    bucket: int
    parts: tuple[tuple[str, int, int], ...]


def plan_bucket(task: BucketTask, ctx: WorkerContext) -> dict[str, Any]:
    """Regions of one large bucket: its pieces joined into ``spill/bNNNNN.d/`` and re-split
    (their paths relative to the work directory)."""
    name = layout.bucket_name(task.bucket)
    final = os.path.join(layout.spill_dir(ctx.work_dir), f"{name}.d")
    scratch = tempfile.mkdtemp(prefix=f"{name}.d.tmp-", dir=layout.spill_dir(ctx.work_dir))
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
    options = ctx.options
    regions = list(plan_regions(joined, options.region_bytes, options.max_region_bytes, 0, planned))
    shutil.rmtree(final, ignore_errors=True)  # an attempt killed between its rename and marker
    os.rename(scratch, final)
    integrity.record_files([os.path.join(final, name) for name in sorted(os.listdir(final))])
    rel = os.path.relpath(final, ctx.work_dir)  # a kept work directory may be moved
    return {
        "regions": [
            [os.path.join(rel, os.path.basename(r.path)), r.start, r.end, r.windowed]
            for r in regions
        ],
        "planned": planned,
    }


@dataclass(frozen=True)
class RegionTask:
    index: int
    region: Region


def run_region(task: RegionTask, ctx: WorkerContext) -> dict[str, Any]:
    """Pass 2 over one region; returns its shard and counters."""
    result = run_shard(ShardTask(task.index, task.region), ctx)
    signed = [result.signed] if result.signed is not None else []
    write_bands(layout.pass2_bands(task.index), signed, ctx)
    chunk = [task.index, result.documents, _records(result, ctx), task.region.size]
    return {"chunks": [chunk], "stats": stats_to_json(result.stats)}


@dataclass(frozen=True)
class FinalizeBatch:
    """Consecutive shards to finalise (:data:`FINALIZE_BATCH` at most, so that a corpus of a
    million shards is not a million tasks); their near-duplicates are read from
    ``dedup/dropped.npy`` when ``dedup``."""

    shards: tuple[int, ...]
    dedup: bool


FINALIZE_BATCH = 64


def finalize(task: FinalizeBatch, ctx: WorkerContext) -> dict[str, Any]:
    """Finalise each shard; per shard [index, documents, tokens, files] written."""
    written = []
    for index in task.shards:
        dropped = np.empty(0, dtype=np.int64)
        if task.dedup:
            dropped = dropped_in_shard(ctx.work_dir, index)
        counts = finalize_shard(ShardDrops(index, dropped), ctx)
        if counts[0]:
            prefix = layout.shard_prefix(ctx.work_dir, index)
            integrity.record_files([f"{prefix}.bin", f"{prefix}.idx"])
        written.append([index, *counts])
    return {"shards": written}
