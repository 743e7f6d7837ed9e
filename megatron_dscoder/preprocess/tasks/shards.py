"""Output shards: one per partition, written by the worker that made it, then merged.

Every partition of the pipeline (an input chunk of pass 1, a spill region of pass 2) is a
*shard*, numbered in the deterministic order of the tasks. Its worker writes the shard's tokens,
document lengths, files per document and (with dedup) MinHash signatures into the work directory
(the file names are :mod:`megatron_dscoder.preprocess.cluster.layout`'s); its band keys go back
to the task, which writes one band file for all its shards.

After deduplication, :func:`finalize_shard` (again a worker task) drops the shard's
near-duplicates and writes the shard as a complete Megatron indexed dataset, and keeps its inputs
(a retried or rerun task finds them). :func:`merge_group` (again a task) concatenates
consecutive shards, in order, into ``PREFIX.bin/.idx`` or into one part of ``--output-shard-mb``
(:mod:`megatron_dscoder.data.manifest`). With ``--keep-shards`` the shard datasets are kept next
to the output (``PREFIX.shards/``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megatron_dscoder.data.indexed import IndexedDatasetWriter, read_documents
from megatron_dscoder.data.manifest import Part, new_hash, part_record
from megatron_dscoder.preprocess.cluster.layout import save_array, shard_file, shard_prefix
from megatron_dscoder.preprocess.dedup import Signed, band_records
from megatron_dscoder.preprocess.inputs.sources import InputChunk
from megatron_dscoder.preprocess.partition import map_chunk, reduce_region
from megatron_dscoder.preprocess.repo.spill import Region
from megatron_dscoder.preprocess.stages.base import WorkerContext
from megatron_dscoder.preprocess.stats import PartitionStats


@dataclass(frozen=True)
class ShardTask:
    """A partition to process and the number of the shard it becomes."""

    index: int
    work: InputChunk | Region


@dataclass
class ShardResult:
    """What a shard task returns to the driver (its tokens stay on disk)."""

    index: int
    documents: int
    signed: Signed | None
    spill: dict[int, bytes]
    stats: PartitionStats


def run_shard(task: ShardTask, ctx: WorkerContext) -> ShardResult:
    """Pass 1 (input task) or pass 2 (spill region) of one partition, written as a shard."""
    if isinstance(task.work, Region):
        result = reduce_region(task.work, ctx)
        spill: dict[int, bytes] = {}
    else:
        mapped = map_chunk(task.work, ctx)
        result, spill = mapped, mapped.spill
    stats = result.stats
    documents = int(result.encoded.lengths.size)
    signed = None
    with stats.timed("write_shard"):
        if documents:
            save_array(shard_file(ctx.work_dir, task.index, "tok"), result.encoded.tokens)
            save_array(shard_file(ctx.work_dir, task.index, "len"), result.encoded.lengths)
            save_array(shard_file(ctx.work_dir, task.index, "nf"), result.files)
        if documents and result.signatures is not None and ctx.options.dedup is not None:
            save_array(shard_file(ctx.work_dir, task.index, "sig"), result.signatures)
            signed = band_records(task.index, result.signatures, ctx.options.dedup)
    return ShardResult(task.index, documents, signed, spill, stats)


@dataclass(frozen=True)
class ShardDrops:
    """A shard to finalise and the positions of its documents to drop (sorted)."""

    index: int
    dropped: np.ndarray


def finalize_shard(task: ShardDrops, ctx: WorkerContext) -> tuple[int, int, int]:
    """Write the shard's kept documents as ``shards/shard-N.bin/.idx``; (documents, tokens,
    files) written."""
    tokens = np.load(shard_file(ctx.work_dir, task.index, "tok"))
    lengths = np.load(shard_file(ctx.work_dir, task.index, "len"))
    files = np.load(shard_file(ctx.work_dir, task.index, "nf"))
    if task.dropped.size:
        keep = np.ones(lengths.size, dtype=bool)
        keep[task.dropped] = False
        tokens = tokens[np.repeat(keep, lengths)]
        lengths, files = lengths[keep], files[keep]
    written = (0, 0, 0)
    if lengths.size:
        writer = IndexedDatasetWriter(shard_prefix(ctx.work_dir, task.index), ctx.dtype)
        try:
            writer.add(tokens, lengths)
            writer.finalize()
        except BaseException:
            writer.abort()
            raise
        written = (int(lengths.size), int(tokens.size), int(files.sum()))
    return written


def merge_shards(prefixes: list[str], writer: IndexedDatasetWriter) -> str:
    """Append the shard datasets, in order, to ``writer``; the digest of the ``.bin`` bytes
    written (hashed as they are written: a part's checksum costs no second read)."""
    digest = new_hash()
    for prefix in prefixes:
        tokens, lengths = read_documents(prefix)
        tokens = np.ascontiguousarray(tokens, dtype=writer.dtype)  # the .bin's bytes
        digest.update(tokens)
        writer.add(tokens, lengths)
    return digest.hexdigest()


@dataclass(frozen=True)
class MergeTask:
    """Consecutive finalised shards -> one dataset at ``prefix`` (``part``: one part of
    ``--output-shard-mb``, whose manifest entry the task returns)."""

    shards: tuple[int, ...]
    prefix: str
    part: bool = False


def merge_group(task: MergeTask, ctx: WorkerContext) -> Part | None:
    """Concatenate the shards into ``task.prefix`` (written under temporary names, renamed);
    a part's manifest entry (sizes, checksums, counts)."""
    writer = IndexedDatasetWriter(task.prefix, ctx.dtype)
    try:
        bin_digest = merge_shards([shard_prefix(ctx.work_dir, i) for i in task.shards], writer)
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    return part_record(task.prefix, bin_digest) if task.part else None
