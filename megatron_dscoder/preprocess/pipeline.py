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

Every partition function is a module-level function over one partition, run by an engine
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

Run it with ``dscoder-preprocess`` (``tools/preprocess_data.py``; :mod:`.cli`) or with
:func:`run_pipeline` on a :class:`.options.PreprocessConfig`.
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
from megatron_dscoder.preprocess.dedup import (
    DedupOutcome,
    GroupTask,
    group_partition,
    num_parts,
    resolve,
)
from megatron_dscoder.preprocess.encode import get_tokenizer
from megatron_dscoder.preprocess.engine import Engine, make_engine
from megatron_dscoder.preprocess.options import PreprocessConfig
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
from megatron_dscoder.preprocess.stages import StageConfig
from megatron_dscoder.preprocess.stats import PartitionStats, Progress, stats_document, write_stats
from megatron_dscoder.preprocess.workdir import WorkDir
from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids, vocab_size

logger = logging.getLogger(__name__)
_NO_DROPS = np.empty(0, dtype=np.int64)


def _init_worker(config: StageConfig) -> None:
    get_tokenizer(config.options.tokenizer_model)
    if config.options.decontam is not None:
        config.options.decontam.index()


def build_stage_config(
    options: PreprocessConfig, estimated_bytes: int, work_dir: str = ""
) -> StageConfig:
    """Check the inputs, output prefix and tokenizer (before any work) and resolve what the
    workers need besides the options: token ids, dtype, spill buckets."""
    check_inputs(list(options.inputs), options.fields.text)
    check_output_prefix(options.output_prefix)
    tok = load_tokenizer(options.tokenizer_model)
    needs_fim = options.fim_rate > 0
    require = ("eos", *(("bos",) if options.bos else ()))
    require += ("fim_begin", "fim_hole", "fim_end") if needs_fim else ()
    purpose = "the EOS appended to each document" + (" and --bos" if options.bos else "")
    purpose += " and --fim-rate > 0" if needs_fim else ""
    ids = special_token_ids(
        tok, require, source=f"tokenizer {options.tokenizer_model}", purpose=purpose
    )
    if options.decontam is not None:
        options.decontam.index()  # a missing or empty benchmark fails here, before any work
    assert ids.eos is not None
    return StageConfig(
        options=options,
        eos=ids.eos,
        bos=ids.bos if options.bos else None,
        sentinels=(ids.fim_begin, ids.fim_hole, ids.fim_end) if needs_fim else (-1, -1, -1),
        dtype=token_dtype(vocab_size(tok)).__name__,
        buckets=num_buckets(estimated_bytes, options.region_bytes),
        work_dir=work_dir,
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


def run_pipeline(config: PreprocessConfig) -> dict[str, Any]:
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
    engine = make_engine(
        config.engine, config.worker_count, stage, _init_worker, config.ray_address
    )
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
    config: PreprocessConfig, engine: Engine, run: _Run, spills: SpillWriter, input_bytes: int
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


def _second_pass(config: PreprocessConfig, engine: Engine, run: _Run, spills: SpillWriter) -> None:
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
    config: PreprocessConfig, stage: StageConfig, engine: Engine, run: _Run, first_repo_shard: int
) -> DedupOutcome | None:
    """The corpus-wide group-by over band keys and the connected components (None if off)."""
    if config.dedup is None:
        return None
    with_records = tuple(index for index, _, records in run.shards if records)
    records = sum(records for _, _, records in run.shards)
    parts = num_parts(records, config.group_bytes, engine.workers) if with_records else 0
    tasks = (GroupTask(p, parts, with_records, stage.work_dir, config.dedup) for p in range(parts))
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


def _merge(
    config: PreprocessConfig, stage: StageConfig, kept: list[int]
) -> EmptyOutputError | None:
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
    config: PreprocessConfig,
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
        "tokenizer": config.tokenizer_model,
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
        "enabled": config.decontam is not None,
        "benchmarks": [b.name for b in config.decontam.benchmarks] if config.decontam else [],
        "ngram": config.decontam.ngram if config.decontam else None,
        "hits": dict(sorted(run.totals.decontam.items())),
        "dropped": run.totals.decontaminated,
    }
    bands, rows = config.dedup.band_layout() if config.dedup else (0, 0)
    document["dedup"] = {
        "enabled": config.dedup is not None,
        **({"ngram": config.dedup.ngram, "num_perm": config.dedup.num_perm,
            "threshold": config.dedup.threshold, "bands": bands, "rows": rows,
            "verify": config.dedup.verify, "scheme": config.dedup.scheme} if config.dedup else {}),
        **run.dedup,
    }  # fmt: skip
    if config.stats_json:
        write_stats(config.stats_json, document)
    if empty is not None:
        raise empty
    return document
