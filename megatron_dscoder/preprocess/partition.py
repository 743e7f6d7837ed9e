"""One partition through the stage lists: an input chunk or a spill region -> tokens.

``map_chunk`` and ``reduce_region`` each take one partition and the
:class:`~megatron_dscoder.preprocess.stages.base.WorkerContext` and return plain data, so any
engine can run them (:mod:`megatron_dscoder.preprocess.tasks.shards` wraps them as
``run_shard``)::

    map_chunk      input chunk -> read -> RECORD_STAGES (filters, quality screening)
                   -> split by level:
                   (a) repository-level records: serialised per bucket for the shuffle
                       (:mod:`megatron_dscoder.preprocess.repo.spill`)
                   (b) other files: one sample each -> SAMPLE_STAGES
    reduce_region  spill region -> group by repository -> Algorithm 1 samples -> SAMPLE_STAGES

    SAMPLE_STAGES  sample hooks -> word hashes -> decontaminate -> MinHash -> FIM
                   -> tokenize (+ EOS)

The two stage lists and what switches each stage on are in
:mod:`megatron_dscoder.preprocess.stages`; here they are run in order, each timed and its drops
counted. Decontamination drops samples sharing a 10-gram with a benchmark; MinHash computes the
signatures of the kept samples for the corpus-wide near-dedup
(:mod:`megatron_dscoder.preprocess.dedup`), which drops near-duplicates after all partitions are
done, when the shards are finalised. Both use one pass of word hashing.

The sample hooks (``PreprocessConfig.sample_hooks``, for library users) are picklable
functions ``(samples, stats) -> samples`` applied to every partition of samples (repository
samples and single files alike) before decontamination, so they see whole samples in plain
text.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np

from megatron_dscoder.preprocess import stages
from megatron_dscoder.preprocess.inputs.readers import read_chunk
from megatron_dscoder.preprocess.inputs.sources import InputChunk
from megatron_dscoder.preprocess.records import (
    REPO_LEVEL_LANGUAGES,
    EncodedPartition,
    Record,
    Sample,
    with_path_comment,
)
from megatron_dscoder.preprocess.repo.order import repo_samples
from megatron_dscoder.preprocess.repo.spill import Region, partition_records, read_region
from megatron_dscoder.preprocess.stages.base import Batch, WorkerContext, run_stages
from megatron_dscoder.preprocess.stats import PartitionStats

logger = logging.getLogger(__name__)


@dataclass
class MapResult:
    """What :func:`map_chunk` returns: file-level tokens, spill blobs per bucket, counters,
    and per document its MinHash signature (None without dedup) and number of files."""

    encoded: EncodedPartition
    spill: dict[int, bytes]
    stats: PartitionStats
    signatures: np.ndarray | None = None
    files: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))


@dataclass
class ReduceResult:
    """What :func:`reduce_region` returns: repository-level tokens, counters, signatures, files."""

    encoded: EncodedPartition
    stats: PartitionStats
    signatures: np.ndarray | None = None
    files: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))


def split_by_level(records: list[Record], enabled: bool) -> tuple[list[Record], list[Record]]:
    """(repository-level records, file-level records)."""
    if not enabled:
        return [], records
    repo_level, file_level = [], []
    for record in records:
        is_repo = bool(record.repo) and record.lang in REPO_LEVEL_LANGUAGES
        (repo_level if is_repo else file_level).append(record)
    return repo_level, file_level


def file_sample(record: Record) -> Sample:
    """A single-file sample, with a path comment when the path and its comment syntax are known."""
    if record.repo and record.path:
        key = f"{record.repo}\x00{record.path}"
    else:  # no repository identity: the content distinguishes files of the same name
        digest = hashlib.blake2b(record.text.encode(), digest_size=16).hexdigest()
        key = f"{record.repo}\x00{record.path}\x00{digest}"
    text = with_path_comment(record.lang, record.path, record.text) if record.path else record.text
    return Sample(key, text, record.repo, (record.path,), record.lang)


def group_by_repo(records: list[Record]) -> dict[str, list[Record]]:
    """Records per repository, repositories in order of first appearance."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.repo, []).append(record)
    return groups


def finish_samples(
    samples: list[Sample], ctx: WorkerContext, stats: PartitionStats
) -> tuple[EncodedPartition, np.ndarray | None, np.ndarray]:
    """The sample stages; returns the tokens, the signatures (None without dedup) and the
    files per document."""
    batch = run_stages(stages.SAMPLE_STAGES, Batch(samples), ctx, stats)
    samples, encoded = batch.samples, batch.encoded
    assert encoded is not None, "the last sample stage tokenises"
    stats.documents += len(samples)
    for sample, tokens in zip(samples, encoded.lengths.tolist(), strict=True):
        lang = sample.lang or "unknown"
        stats.languages[f"{lang}:samples"] += 1
        stats.languages[f"{lang}:files"] += len(sample.paths)
        stats.languages[f"{lang}:bytes"] += len(sample.text.encode("utf-8", "surrogatepass"))
        stats.languages[f"{lang}:tokens"] += tokens
    files = np.fromiter((len(s.paths) for s in samples), dtype=np.int32, count=len(samples))
    stats.files += int(files.sum())
    stats.tokens += int(encoded.tokens.size)
    return encoded, batch.signatures, files


def map_chunk(chunk: InputChunk, ctx: WorkerContext) -> MapResult:
    """First pass over one input chunk (see the module docstring)."""
    options = ctx.options
    stats = PartitionStats()
    with stats.timed("read"):
        records = read_chunk(chunk, options.fields, options.max_record_bytes, stats.bad)
    stats.records += len(records)
    stats.text_bytes += sum(len(r.text.encode()) for r in records)
    records = run_stages(stages.RECORD_STAGES, records, ctx, stats)
    repo_level, file_level = split_by_level(records, options.repo_level)
    with stats.timed("spill"):
        spill = partition_records(repo_level, ctx.buckets)
    encoded, signatures, files = finish_samples([file_sample(r) for r in file_level], ctx, stats)
    return MapResult(encoded, spill, stats, signatures, files)


def reduce_region(region: Region, ctx: WorkerContext) -> ReduceResult:
    """Second pass over one spill region (see the module docstring)."""
    stats = PartitionStats()
    with stats.timed("read_spill"):
        records = read_region(region)
    with stats.timed("repo_order"):
        samples = []
        for repo, group in group_by_repo(records).items():
            try:
                samples += repo_samples(repo, group, ctx.options.seed, stats.repo)
            except Exception:  # never lose a run to one odd repository: keep its files alone
                logger.exception("ordering repository %r failed; one sample per file", repo)
                stats.repo["ordering_errors"] += 1
                samples += [file_sample(r) for r in group]
    encoded, signatures, files = finish_samples(samples, ctx, stats)
    return ReduceResult(encoded, stats, signatures, files)
