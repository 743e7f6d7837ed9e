"""Orchestration: a raw code corpus -> Megatron ``.bin``/``.idx``, on a local pool or on Ray.

::

    pass 1   inputs --(driver: stream, cut into ~4 MB tasks)--> run_shard(task):
               read, filter; file-level samples -> decontaminate, MinHash, FIM, tokens: shard i
               repository-level records -> per-bucket blobs --(driver)--> spill files
    pass 2   spill files --(driver: plan regions <= region_bytes)--> run_shard(region):
               Algorithm 1 samples -> decontaminate, MinHash, FIM, tokens: shard T + j
    dedup    band records of all shards --> group_partition(key range) x P: candidate pairs,
               verified --(driver)--> connected components -> samples to drop
    finish   finalize_shard(i) x shards: PREFIX work shards without near-duplicates
               --(driver)--> merge into PREFIX.bin/.idx (renamed into place); stats JSON

Every stage is a module-level function over one partition, run by an engine
(:mod:`.engine`: ``local`` process pool, the default, or ``ray``); both engines run the same
functions on the same partitions, consume results in partition order, and every random choice
comes from (seed, sample identity), so the output is byte-identical for any engine and any
``workers``. Workers write their shards to the work directory (``--tmp-dir``, default next to
the output; shared storage for Ray) and return only counters; the driver moves the input
blobs and the spill blobs, plans partitions and merges.

Memory does not grow with the corpus. The driver holds at most ``2 * workers + 2`` tasks and
results in flight (``task_bytes``, 4 MiB, each), the spill buffers (32 MiB, see
:class:`.spill.SpillWriter`), one shard at a time while merging, and the verified
near-duplicate pairs (16 bytes each, see :mod:`.dedup`). A worker holds one task: about
``region_bytes`` (8 MiB; at most ``max_region_bytes``, 32 MiB, for one large repository) of
repository text in pass 2 (see :func:`.spill.plan_regions`), a few times over as records,
samples, word hashes and token arrays, plus the tokenizer's memory for one batch of
``encode_batch_chars`` characters in 16 KiB chunks; or one dedup key range of about
``group_bytes`` (64 MiB) of band records (about 3x while sorting). Measured on 2 cores with 2
workers, see ``benchmarks/bench_preprocess.py``.

Run it with ``tools/preprocess_data.py`` (see its docstring) or :func:`run_pipeline`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from megatron_dscoder.data.indexed import EmptyOutputError, IndexedDatasetWriter, token_dtype
from megatron_dscoder.data.prefix import check_output_prefix
from megatron_dscoder.preprocess.decontam import DecontamConfig
from megatron_dscoder.preprocess.dedup import (
    DedupOutcome,
    GroupTask,
    group_partition,
    num_parts,
    resolve,
)
from megatron_dscoder.preprocess.engine import Engine, make_engine
from megatron_dscoder.preprocess.fim import FimConfig
from megatron_dscoder.preprocess.minhash import MinHashConfig
from megatron_dscoder.preprocess.quality import QualityConfig
from megatron_dscoder.preprocess.readers import FieldNames
from megatron_dscoder.preprocess.shards import (
    FinalizeTask,
    ShardTask,
    finalize_shard,
    merge_shards,
    run_shard,
    shard_prefix,
)
from megatron_dscoder.preprocess.sources import (
    check_inputs,
    estimated_text_bytes,
    iter_tasks,
    total_input_bytes,
)
from megatron_dscoder.preprocess.spill import SpillWriter, num_buckets, plan_regions
from megatron_dscoder.preprocess.stages import SampleHook, StageConfig, get_tokenizer
from megatron_dscoder.preprocess.stats import PartitionStats, Progress, stats_document, write_stats
from megatron_dscoder.preprocess.workdir import WorkDir
from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids, vocab_size

logger = logging.getLogger(__name__)
_NO_DROPS = np.empty(0, dtype=np.int64)


@dataclass
class PipelineConfig:
    """Options of a preprocessing run (the CLI flags of ``tools/preprocess_data.py``)."""

    inputs: list[str]
    tokenizer_path: str
    output_prefix: str
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.0
    bos: bool = False
    seed: int = 1234
    stats_json: str | None = None
    fields: FieldNames = field(default_factory=FieldNames)
    max_record_bytes: int = 16 << 20
    task_bytes: int = 4 << 20
    region_bytes: int = 8 << 20
    max_region_bytes: int = 32 << 20
    tmp_dir: str | None = None
    apply_filters: bool = True
    quality: QualityConfig | None = field(default_factory=QualityConfig)
    repo_level: bool = True
    progress: bool = True
    sample_hooks: tuple[SampleHook, ...] = ()
    dedup: MinHashConfig | None = field(default_factory=MinHashConfig)
    decontam: DecontamConfig | None = field(default_factory=DecontamConfig)
    group_bytes: int = 64 << 20
    engine: str = "local"
    ray_address: str | None = None
    keep_shards: bool = False


def _init_worker(config: StageConfig) -> None:
    get_tokenizer(config.tokenizer_path)
    if config.decontam is not None:
        config.decontam.index()


def build_stage_config(
    config: PipelineConfig, estimated_bytes: int, work_dir: str = ""
) -> StageConfig:
    """Validate the tokenizer and options (before any work) and derive the workers' config."""
    if not config.inputs:
        raise ValueError("no --input given")
    check_inputs(config.inputs, config.fields.text)
    check_output_prefix(config.output_prefix)
    for name in ("fim_rate", "fim_spm_rate"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1]")
    if config.dedup is not None and not 0.0 < config.dedup.threshold <= 1.0:
        raise ValueError("--dedup-threshold must be in (0, 1]")
    tok = load_tokenizer(config.tokenizer_path)
    needs_fim = config.fim_rate > 0
    require = ("eos", *(("bos",) if config.bos else ()))
    require += ("fim_begin", "fim_hole", "fim_end") if needs_fim else ()
    purpose = "the EOS appended to each document" + (" and --bos" if config.bos else "")
    purpose += " and --fim-rate > 0" if needs_fim else ""
    ids = special_token_ids(
        tok, require, source=f"tokenizer {config.tokenizer_path}", purpose=purpose
    )
    fim = FimConfig(
        rate=config.fim_rate, spm_rate=config.fim_spm_rate, seed=config.seed,
        begin=ids.fim_begin if needs_fim else -1, hole=ids.fim_hole if needs_fim else -1,
        end=ids.fim_end if needs_fim else -1,
    )  # fmt: skip
    if config.decontam is not None:
        config.decontam.index()  # a missing or empty benchmark fails here, before any work
    assert ids.eos is not None
    return StageConfig(
        tokenizer_path=config.tokenizer_path,
        eos=ids.eos,
        bos=ids.bos if config.bos else None,
        dtype=token_dtype(vocab_size(tok)).__name__,
        fim=fim,
        buckets=num_buckets(estimated_bytes, config.region_bytes),
        seed=config.seed,
        fields=config.fields,
        max_record_bytes=config.max_record_bytes,
        apply_filters=config.apply_filters,
        quality=config.quality,
        repo_level=config.repo_level,
        sample_hooks=config.sample_hooks,
        work_dir=work_dir,
        dedup=config.dedup,
        decontam=config.decontam,
    )


@dataclass
class _Run:
    """The driver's state: counters and the shards made so far (index, documents, records)."""

    totals: PartitionStats = field(default_factory=PartitionStats)
    seconds: dict[str, float] = field(default_factory=dict)
    shards: list[tuple[int, int, int]] = field(default_factory=list)
    dedup: dict[str, int] = field(default_factory=dict)
    out: dict[str, int] = field(default_factory=lambda: {"documents": 0, "tokens": 0, "files": 0})

    def timed(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = now - since
        return now


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    """Run the whole preprocessing; returns the stats document (also written if asked)."""
    started = time.perf_counter()
    stage = build_stage_config(config, estimated_text_bytes(config.inputs))
    input_bytes = total_input_bytes(config.inputs)
    out_dir = os.path.dirname(os.path.abspath(config.output_prefix))
    work_root = config.tmp_dir or out_dir
    os.makedirs(work_root, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.basename(config.output_prefix)
    work = WorkDir.create(work_root, base)  # also sweeps the work directories of dead runs
    work_dir = work.path
    os.makedirs(os.path.join(work_dir, "shards"))
    stage = replace(stage, work_dir=work_dir)
    run = _Run()
    engine = make_engine(config.engine, config.workers, stage, _init_worker, config.ray_address)
    empty: EmptyOutputError | None = None
    try:
        try:
            mark = started
            spills = SpillWriter(os.path.join(work_dir, "spill"))
            os.makedirs(spills.directory)
            _first_pass(config, engine, run, spills, input_bytes)
            mark = run.timed("pass1_read_filter_spill", mark)
            first_repo_shard = len(run.shards)
            _second_pass(config, engine, run, spills)
            mark = run.timed("pass2_order_fim_tokenize", mark)
            dropped = _deduplicate(config, stage, engine, run, first_repo_shard)
            mark = run.timed("dedup_groupby_components", mark)
            kept = _finalize(engine, run, dropped)
            mark = run.timed("finalize_shards", mark)
            empty = _merge(config, stage, kept)
            run.timed("merge", mark)
        except BaseException:
            engine.close(cancel=True)
            raise
        engine.close()
    finally:
        work.remove()
    run.seconds["total"] = time.perf_counter() - started
    return _report(config, stage, run, engine, input_bytes, empty)


def _first_pass(
    config: PipelineConfig, engine: Engine, run: _Run, spills: SpillWriter, input_bytes: int
) -> None:
    progress = Progress("pass 1/2 read+filter", input_bytes, config.progress)
    tasks = iter_tasks(
        config.inputs, config.task_bytes, config.max_record_bytes, run.totals.bad,
        run.totals.skipped,
    )  # fmt: skip
    shard_tasks = (ShardTask(i, task) for i, task in enumerate(tasks))
    try:
        for task, result in engine.map(run_shard, shard_tasks):
            with run.totals.timed("driver_spill"):
                for bucket in sorted(result.spill):
                    spills.add(bucket, result.spill[bucket])
            run.totals.merge(result.stats)
            run.shards.append((result.index, result.documents, result.band_records))
            progress.update(task.work.input_bytes, result.stats.records, result.stats.text_bytes)
        spills.flush()
    finally:
        progress.close()


def _second_pass(config: PipelineConfig, engine: Engine, run: _Run, spills: SpillWriter) -> None:
    progress = Progress("pass 2/2 order+FIM+tokenize", sum(spills.sizes.values()), config.progress)
    planned: dict[str, int] = {}
    first = len(run.shards)

    def regions() -> Iterator[ShardTask]:
        index = first
        for bucket in sorted(spills.sizes):
            for region in plan_regions(
                spills.path(bucket), config.region_bytes, config.max_region_bytes, 0, planned
            ):
                yield ShardTask(index, region)
                index += 1

    try:
        for task, result in engine.map(run_shard, regions()):
            region = task.work
            run.totals.merge(result.stats)
            run.shards.append((result.index, result.documents, result.band_records))
            if region.end == os.path.getsize(region.path):
                os.remove(region.path)  # its last region is done: free the disk early
            progress.update(
                region.end - region.start, result.stats.documents, region.end - region.start
            )
    finally:
        progress.close()
    run.totals.repo.update(planned)


def _deduplicate(
    config: PipelineConfig, stage: StageConfig, engine: Engine, run: _Run, first_repo_shard: int
) -> DedupOutcome | None:
    """The corpus-wide group-by over band keys and the connected components (None if off)."""
    if stage.dedup is None:
        return None
    with_records = tuple(index for index, _, records in run.shards if records)
    records = sum(records for _, _, records in run.shards)
    parts = num_parts(records, config.group_bytes, engine.workers) if with_records else 0
    tasks = (GroupTask(p, parts, with_records, stage.work_dir, stage.dedup) for p in range(parts))
    results = []
    for _, result in engine.map(group_partition, tasks):
        results.append(result)
        for name, seconds in result.seconds.items():
            run.totals.seconds[name] += seconds
    outcome = resolve(results, first_repo_shard)
    run.dedup = outcome.counts
    return outcome


def _finalize(engine: Engine, run: _Run, outcome: DedupOutcome | None) -> list[int]:
    """Finalise every non-empty shard (dropping its near-duplicates); their prefixes in order."""
    tasks = (
        FinalizeTask(index, outcome.dropped_in(index) if outcome is not None else _NO_DROPS)
        for index, documents, _ in run.shards
        if documents
    )
    kept = []
    for task, (documents, tokens, files) in engine.map(finalize_shard, tasks):
        run.out["documents"] += documents
        run.out["tokens"] += tokens
        run.out["files"] += files
        if documents:
            kept.append(task.index)
    return kept


def _merge(config: PipelineConfig, stage: StageConfig, kept: list[int]) -> EmptyOutputError | None:
    """Concatenate the shards into PREFIX.bin/.idx (None, or the error of an empty output)."""
    prefixes = [shard_prefix(stage.work_dir, index) for index in kept]
    if not prefixes:
        return EmptyOutputError(f"no documents to write to {config.output_prefix}.bin")
    writer = IndexedDatasetWriter(config.output_prefix, stage.dtype)
    try:
        merge_shards(prefixes, writer)
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    if config.keep_shards:
        target = f"{config.output_prefix}.shards"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(os.path.join(stage.work_dir, "shards"), target)
    return None


def _report(
    config: PipelineConfig,
    stage: StageConfig,
    run: _Run,
    engine: Engine,
    input_bytes: int,
    empty: EmptyOutputError | None,
) -> dict[str, Any]:
    """The stats document (written to ``stats_json`` if set); raises ``empty`` if set."""
    info = {
        "inputs": list(config.inputs),
        "output_prefix": config.output_prefix,
        "tokenizer": config.tokenizer_path,
        "dtype": stage.dtype,
        "engine": config.engine,
        "workers": engine.workers,
        "seed": config.seed,
        "fim_rate": config.fim_rate,
        "fim_spm_rate": config.fim_spm_rate,
        "bos": config.bos,
        "eos_id": stage.eos,
        "bos_id": stage.bos,
        "buckets": stage.buckets,
        "shards": len(run.shards),
        "input_bytes": input_bytes,
        "bin_bytes": 0 if empty else os.path.getsize(f"{config.output_prefix}.bin"),
    }
    info["quality_config"] = dataclasses.asdict(config.quality) if config.quality else None
    document = stats_document(run.totals, info, run.seconds)
    document["documents_before_dedup"] = document["documents_out"]
    document["documents_out"] = run.out["documents"]
    document["files_out"] = run.out["files"]
    document["tokens"] = run.out["tokens"]
    document["decontamination"] = {
        "enabled": stage.decontam is not None,
        "benchmarks": [b.name for b in stage.decontam.benchmarks] if stage.decontam else [],
        "ngram": stage.decontam.ngram if stage.decontam else None,
        "hits": dict(sorted(run.totals.decontam.items())),
        "dropped": run.totals.decontaminated,
    }
    bands, rows = stage.dedup.band_layout() if stage.dedup else (0, 0)
    document["dedup"] = {
        "enabled": stage.dedup is not None,
        **({"ngram": stage.dedup.ngram, "num_perm": stage.dedup.num_perm,
            "threshold": stage.dedup.threshold, "bands": bands, "rows": rows,
            "verify": stage.dedup.verify, "scheme": stage.dedup.scheme} if stage.dedup else {}),
        **run.dedup,
    }  # fmt: skip
    if config.stats_json:
        write_stats(config.stats_json, document)
    if empty is not None:
        raise empty
    return document
