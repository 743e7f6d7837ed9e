"""The pipeline's stages as plain functions over partitions (lists) of records and samples.

Two partition functions make up a run; each takes one task and a :class:`StageConfig` and
returns plain data, so any executor can run them (the local process pool of
:mod:`.pipeline`, or a cluster engine mapping them over partitions):

``map_task``      input task -> read -> filter -> quality screening (:mod:`.quality`:
                  syntax, generated code, giant functions) -> split by level ->
                  (a) repository-level records: serialised per bucket for the shuffle
                      (:mod:`.spill`)
                  (b) other files: one sample each -> :func:`finish_samples`
``reduce_region`` spill region -> group by repository -> Algorithm 1 samples
                  -> :func:`finish_samples`

:func:`finish_samples` is where samples become tokens::

    samples --[ sample hooks ]--> decontaminate --> MinHash --> FIM --> tokenisation (+ EOS)

Decontamination (:mod:`.decontam`) drops samples sharing a 10-gram with a benchmark; MinHash
(:mod:`.minhash`) computes the signatures of the kept samples for the corpus-wide near-dedup
(:mod:`.dedup`), which drops near-duplicates after all partitions are done, when the shards
are finalised (:mod:`.shards`). Both share one pass of word hashing over the partition.

**Hook point.** ``StageConfig.sample_hooks`` is the documented place for repository-level
near-deduplication and benchmark decontamination (the follow-up issue): each hook is a
picklable function ``(samples, stats) -> samples`` applied to every partition of samples —
repository-level components and single files alike — after the samples are built and before
FIM, so they see whole samples in plain text, exactly as DeepSeek-Coder deduplicates
"the concatenated code from the repository level as a single sample".
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from megatron_dscoder.preprocess.decontam import DecontamConfig, contaminated
from megatron_dscoder.preprocess.encode import (
    EncodedPartition,
    encode_documents,
    newline_safe,
    text_tokenizer,
)
from megatron_dscoder.preprocess.filters import filter_records
from megatron_dscoder.preprocess.fim import FimConfig, apply_fim
from megatron_dscoder.preprocess.minhash import MinHashConfig, signatures_of_words, word_hashes
from megatron_dscoder.preprocess.quality import QualityConfig, screen_records
from megatron_dscoder.preprocess.readers import FieldNames, read_task
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
from megatron_dscoder.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

#: A sample hook: ``(samples, stats) -> samples``; must be a module-level (picklable) function.
SampleHook = Callable[[list[Sample], PartitionStats], list[Sample]]


@dataclass(frozen=True)
class StageConfig:
    """Everything a worker needs; small and picklable."""

    tokenizer_path: str
    eos: int
    dtype: str
    fim: FimConfig
    buckets: int
    bos: int | None = None
    seed: int = 0
    fields: FieldNames = field(default_factory=FieldNames)
    max_record_bytes: int = 16 << 20
    apply_filters: bool = True
    quality: QualityConfig | None = field(default_factory=QualityConfig)
    repo_level: bool = True
    encode_batch_chars: int = 1 << 20
    encode_chunk_chars: int = 16384
    sample_hooks: tuple[SampleHook, ...] = ()
    work_dir: str = ""
    dedup: MinHashConfig | None = None
    decontam: DecontamConfig | None = None


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


_TOKENIZERS: dict[str, tuple[Tokenizer, bool]] = {}


def get_tokenizer(path: str) -> tuple[Tokenizer, bool]:
    """The process-wide text tokenizer for ``path`` (loaded once per worker; see
    :func:`.encode.text_tokenizer`) and its newline safety."""
    if path not in _TOKENIZERS:
        tok = text_tokenizer(load_tokenizer(path))
        _TOKENIZERS[path] = (tok, newline_safe(tok))
    return _TOKENIZERS[path]


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


def screen_samples(
    samples: list[Sample], config: StageConfig, stats: PartitionStats
) -> tuple[list[Sample], np.ndarray | None]:
    """Decontamination (contaminated samples dropped) and MinHash signatures of the rest."""
    if not samples or (config.decontam is None and config.dedup is None):
        return samples, None
    with stats.timed("word_hashes"):
        words, text_of = word_hashes([s.text for s in samples])
    if config.decontam is not None:
        with stats.timed("decontaminate"):
            mask = contaminated(words, text_of, len(samples), config.decontam, stats.decontam)
            if mask.any():
                keep = ~mask
                samples = [s for s, k in zip(samples, keep.tolist(), strict=True) if k]
                kept_words = keep[text_of]
                words = words[kept_words]
                text_of = (np.cumsum(keep) - 1)[text_of[kept_words]]
                stats.decontaminated += int(mask.sum())
    if config.dedup is None:
        return samples, None
    with stats.timed("minhash"):
        return samples, signatures_of_words(words, text_of, len(samples), config.dedup)


def finish_samples(
    samples: list[Sample], config: StageConfig, stats: PartitionStats
) -> tuple[EncodedPartition, np.ndarray | None, np.ndarray]:
    """Sample hooks, decontamination, MinHash, then FIM, then tokenisation.

    Returns the tokens, the signatures (None without dedup) and the files per document.
    """
    with stats.timed("hooks"):
        for hook in config.sample_hooks:
            samples = hook(samples, stats)
    samples, signatures = screen_samples(samples, config, stats)
    with stats.timed("fim"):
        documents = apply_fim(samples, config.fim, stats.fim)
    with stats.timed("tokenize"):
        tok, safe = get_tokenizer(config.tokenizer_path)
        encoded = encode_documents(
            documents, tok, config.eos, config.dtype, config.encode_batch_chars,
            config.encode_chunk_chars if safe else None, config.bos,
        )  # fmt: skip
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
    return encoded, signatures, files


def map_task(task: Task, config: StageConfig) -> MapResult:
    """First pass over one input task (see the module docstring)."""
    stats = PartitionStats()
    with stats.timed("read"):
        records = read_task(task, config.fields, config.max_record_bytes, stats.bad)
    stats.records += len(records)
    stats.text_bytes += sum(len(r.text.encode()) for r in records)
    if config.apply_filters:
        with stats.timed("filter"):
            records = filter_records(records, stats.filtered)
    if config.quality is not None:
        with stats.timed("quality"):
            records = screen_records(records, config.quality, stats.quality, stats.syntax)
    repo_level, file_level = split_by_level(records, config.repo_level)
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
                samples += repo_samples(repo, group, config.seed, stats.repo)
            except Exception:  # never lose a run to one odd repository: keep its files alone
                logger.exception("ordering repository %r failed; one sample per file", repo)
                stats.repo["ordering_errors"] += 1
                samples += [file_sample(r) for r in group]
    encoded, signatures, files = finish_samples(samples, config, stats)
    return ReduceResult(encoded, stats, signatures, files)
