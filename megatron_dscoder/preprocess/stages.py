"""The partition functions: one input task or one spill region -> stages -> tokens.

``map_task`` and ``reduce_region`` each take one partition and a :class:`StageConfig` and
return plain data, so any engine can run them (:mod:`.shards` wraps them as ``run_shard``)::

    map_task       input task -> read -> RECORD_STAGES (filters, quality screening)
                   -> split by level:
                   (a) repository-level records: serialised per bucket for the shuffle (:mod:`.spill`)
                   (b) other files: one sample each -> SAMPLE_STAGES
    reduce_region  spill region -> group by repository -> Algorithm 1 samples -> SAMPLE_STAGES

    SAMPLE_STAGES  sample hooks -> word hashes -> decontaminate -> MinHash -> FIM -> tokenize (+ EOS)

The two stage lists, what switches each stage on, and how to add one are in :mod:`.options`;
here they are run in order, each timed and its drops counted. Decontamination drops samples
sharing a 10-gram with a benchmark; MinHash computes the signatures of the kept samples for the
corpus-wide near-dedup (:mod:`.dedup`), which drops near-duplicates after all partitions are
done, when the shards are finalised (:mod:`.shards`). Both use one pass of word hashing.

The sample hooks (``PreprocessConfig.sample_hooks``, for library users) are picklable
functions ``(samples, stats) -> samples`` applied to every partition of samples (repository
samples and single files alike) before decontamination, so they see whole samples in plain
text.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from megatron_dscoder.preprocess import options as stage_lists
from megatron_dscoder.preprocess.encode import EncodedPartition
from megatron_dscoder.preprocess.fim import FimConfig, Piece
from megatron_dscoder.preprocess.options import PreprocessConfig, Stage
from megatron_dscoder.preprocess.readers import read_task
from megatron_dscoder.preprocess.records import (
    REPO_LEVEL_LANGUAGES,
    Record,
    Sample,
    with_path_comment,
)
from megatron_dscoder.preprocess.repo_order import repo_samples
from megatron_dscoder.preprocess.sources import Task
from megatron_dscoder.preprocess.spill import Region, partition_records, read_region
from megatron_dscoder.preprocess.stats import PartitionStats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageConfig:
    """What a worker gets: the run's options, and only what was resolved from them and the
    tokenizer (by :func:`.pipeline.build_stage_config`); small and picklable."""

    options: PreprocessConfig
    eos: int
    dtype: str
    buckets: int
    bos: int | None = None
    sentinels: tuple[int, int, int] = (-1, -1, -1)
    """FIM begin, hole, end ids (-1 without FIM)."""
    work_dir: str = ""

    @property
    def fim(self) -> FimConfig:
        begin, hole, end = self.sentinels
        o = self.options
        return FimConfig(o.fim_rate, o.fim_spm_rate, o.seed, begin, hole, end)


@dataclass
class Batch:
    """A partition's samples on their way to tokens; each sample stage fills in its part."""

    samples: list[Sample]
    words: np.ndarray | None = None  # word hashes of the samples' texts (:mod:`.minhash`)
    text_of: np.ndarray | None = None  # the sample of each word
    signatures: np.ndarray | None = None  # MinHash, one row per sample (None without dedup)
    documents: list[list[Piece]] | None = None  # after FIM
    encoded: EncodedPartition | None = None  # after tokenisation


@dataclass
class MapResult:
    """What :func:`map_task` returns: file-level tokens, spill blobs per bucket, counters,
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


def run_stages(stages: list[Stage], items: Any, config: StageConfig, stats: PartitionStats) -> Any:
    """The enabled ``stages`` in order, each timed (``seconds[name]``) and its drops counted
    (``dropped[name]``: records, or the samples of a :class:`Batch`)."""
    size = (lambda b: len(b.samples)) if isinstance(items, Batch) else len
    for stage in stages:
        if not stage.enabled(config.options):
            continue
        before = size(items)
        with stats.timed(stage.name):
            items = stage.run(items, config, stats)
        if dropped := before - size(items):
            stats.dropped[stage.name] += dropped
    return items


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
    samples: list[Sample], config: StageConfig, stats: PartitionStats
) -> tuple[EncodedPartition, np.ndarray | None, np.ndarray]:
    """The sample stages; returns the tokens, the signatures (None without dedup) and the
    files per document."""
    batch = run_stages(stage_lists.SAMPLE_STAGES, Batch(samples), config, stats)
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


def map_task(task: Task, config: StageConfig) -> MapResult:
    """First pass over one input task (see the module docstring)."""
    options = config.options
    stats = PartitionStats()
    with stats.timed("read"):
        records = read_task(task, options.fields, options.max_record_bytes, stats.bad)
    stats.records += len(records)
    stats.text_bytes += sum(len(r.text.encode()) for r in records)
    records = run_stages(stage_lists.RECORD_STAGES, records, config, stats)
    repo_level, file_level = split_by_level(records, options.repo_level)
    with stats.timed("spill"):
        spill = partition_records(repo_level, config.buckets)
    encoded, signatures, files = finish_samples([file_sample(r) for r in file_level], config, stats)
    return MapResult(encoded, spill, stats, signatures, files)


def reduce_region(region: Region, config: StageConfig) -> ReduceResult:
    """Second pass over one spill region (see the module docstring)."""
    stats = PartitionStats()
    with stats.timed("read_spill"):
        records = read_region(region)
    with stats.timed("repo_order"):
        samples = []
        for repo, group in group_by_repo(records).items():
            try:
                samples += repo_samples(repo, group, config.options.seed, stats.repo)
            except Exception:  # never lose a run to one odd repository: keep its files alone
                logger.exception("ordering repository %r failed; one sample per file", repo)
                stats.repo["ordering_errors"] += 1
                samples += [file_sample(r) for r in group]
    encoded, signatures, files = finish_samples(samples, config, stats)
    return ReduceResult(encoded, stats, signatures, files)
