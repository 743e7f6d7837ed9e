"""The driver: a raw code corpus -> Megatron ``.bin``/``.idx``, on a local pool or on Ray.

The driver plans references and applies counts; every byte of corpus, spill, shard and output
is read and written by tasks (:mod:`.tasks`), each of which leaves a completion marker
(:mod:`.cluster.markers`), in this order: plan -> pass 1 (``run_ref`` per input reference) ->
pass 2a (``plan_bucket`` per large bucket) -> pass 2 (``run_region`` per region) -> dedup
(``merge_band`` per band, ``verify_range`` per id range, ``components``) -> ``finalize`` per 64
shards -> ``merge_group`` per output part. What each task reads and writes, and what runs where,
is ``docs/cluster.md``; the files and task names are :mod:`.cluster.layout`.

Tasks run unordered on an engine (:mod:`.cluster.engine`: ``local`` process pool, the default,
or ``ray``); the driver applies results by task number, and every random choice comes from
(seed, sample identity), so the output is byte-identical for any engine, any ``workers`` and any
way the input was cut into references. ``--work-dir DIR`` keeps the work directory; rerunning the
same command after a kill skips the tasks whose markers exist (``tasks`` in the stats JSON counts
ran/skipped, ``task_seconds`` weighs them).

Memory does not grow with the corpus, except for the driver's bookkeeping: about 100 bytes per
shard and 8 bytes per (reference, bucket) of spill (an offsets matrix; 49 MB for 6,000 references
x 1,024 buckets). A worker holds one chunk of ``task_bytes`` (4 MiB) in pass 1, a region of about
``region_bytes`` (8 MiB; at most ``max_region_bytes``) in pass 2, a few times over as records,
samples, word hashes and token arrays; or one key range of one band of about ``group_bytes``
(64 MiB) of band records (about 3x while sorting); the components task holds the verified pairs
(see :mod:`.dedup`). Measured on 2 cores with 2 workers: ``benchmarks/bench_preprocess.py``.

Run it with ``dscoder-preprocess`` (:mod:`.cli`) or with :func:`run_pipeline` on a
:class:`~megatron_dscoder.preprocess.config.PreprocessConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from megatron_dscoder.data.indexed import EmptyOutputError, token_dtype
from megatron_dscoder.data.prefix import check_output_prefix
from megatron_dscoder.preprocess.cluster import layout
from megatron_dscoder.preprocess.cluster.engine import Engine, make_engine
from megatron_dscoder.preprocess.cluster.markers import Step, TaskCounts, run_steps
from megatron_dscoder.preprocess.cluster.workdir import WorkDir, fingerprint
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.inputs.plan import (
    CHUNKS_PER_REF,
    MAX_REFS,
    input_sizes,
    plan_refs,
    repositories,
)
from megatron_dscoder.preprocess.inputs.sources import check_inputs
from megatron_dscoder.preprocess.repo.spill import Region, num_buckets
from megatron_dscoder.preprocess.report.progress import Progress
from megatron_dscoder.preprocess.report.stats_json import stats_document, write_stats
from megatron_dscoder.preprocess.stages.base import WorkerContext
from megatron_dscoder.preprocess.stages.decontam import benchmark_index
from megatron_dscoder.preprocess.stages.minhash import band_layout
from megatron_dscoder.preprocess.stats import PartitionStats, stats_from_json
from megatron_dscoder.preprocess.tasks.dedup import deduplicate
from megatron_dscoder.preprocess.tasks.merge import write_output
from megatron_dscoder.preprocess.tasks.passes import (
    FINALIZE_BATCH,
    BucketTask,
    FinalizeBatch,
    RefTask,
    RegionTask,
    finalize,
    plan_bucket,
    run_ref,
    run_region,
)
from megatron_dscoder.tokenizer import get_tokenizer, load_tokenizer, special_token_ids, vocab_size

logger = logging.getLogger(__name__)


def _init_worker(ctx: WorkerContext) -> None:
    get_tokenizer(ctx.options.tokenizer_model)
    if ctx.options.decontam is not None:
        benchmark_index(ctx.options.decontam)


def worker_context(
    options: PreprocessConfig, estimated_bytes: int, work_dir: str = ""
) -> WorkerContext:
    """Check the tokenizer (before any work) and resolve what the workers need besides the
    options: token ids, dtype, spill buckets."""
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
        benchmark_index(
            options.decontam
        )  # a missing or empty benchmark fails here, before any work
    assert ids.eos is not None
    return WorkerContext(
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
    """The driver's state: counters, the shards made so far (index, documents, records), the
    spill offsets (``spill[ref, b]``: where bucket ``b`` starts in the spill file of input
    reference ``ref``, ``spill[ref, b + 1]`` where it ends), the tasks run and skipped."""

    totals: PartitionStats = field(default_factory=PartitionStats)
    seconds: dict[str, float] = field(default_factory=dict)
    shards: list[tuple[int, int, int]] = field(default_factory=list)
    spill: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    dedup: dict[str, int] = field(default_factory=dict)
    tasks: TaskCounts = field(default_factory=TaskCounts)
    out: dict[str, int] = field(default_factory=lambda: {"documents": 0, "tokens": 0, "files": 0})
    parts: int = 0

    def timed(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = now - since
        return now


def _open_work_dir(config: PreprocessConfig, ctx: WorkerContext, work_root: str) -> WorkDir:
    if config.work_dir:
        work = WorkDir.keep(config.work_dir, fingerprint(config, ctx))
    else:
        work = WorkDir.create(work_root, os.path.basename(config.output_prefix))
    layout.make_dirs(work.path)
    return work


@dataclass(frozen=True)
class PreparedRun:
    """A run whose inputs, output prefix, tokenizer and benchmarks were checked; nothing
    written yet."""

    config: PreprocessConfig
    ctx: WorkerContext
    input_bytes: int
    started: float


def prepare_run(config: PreprocessConfig) -> PreparedRun:
    """Every check a run makes before it writes anything (a mistake found here is the user's,
    before work: exit status 2), and what the workers need."""
    started = time.perf_counter()
    repositories.cache_clear()  # directories may have changed since a previous run
    check_inputs(list(config.inputs), config.fields.text)
    check_output_prefix(config.output_prefix)
    estimated_bytes, input_bytes = input_sizes(config.inputs)
    return PreparedRun(config, worker_context(config, estimated_bytes), input_bytes, started)


def run_pipeline(config: PreprocessConfig) -> dict[str, Any]:
    """Run the whole preprocessing; returns the stats document (also written if asked)."""
    return execute(prepare_run(config))


def execute(prepared: PreparedRun) -> dict[str, Any]:
    """The run itself: work directory, tasks, output, stats."""
    config, ctx, input_bytes, started = (
        prepared.config,
        prepared.ctx,
        prepared.input_bytes,
        prepared.started,
    )
    out_dir = os.path.dirname(os.path.abspath(config.output_prefix))
    work_root = config.tmp_dir or out_dir
    os.makedirs(work_root, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    work = _open_work_dir(config, ctx, work_root)
    ctx = replace(ctx, work_dir=os.path.abspath(work.path))
    run = _Run()
    empty: EmptyOutputError | None = None
    try:
        engine = make_engine(
            config.engine, config.worker_count, ctx, _init_worker, config.ray_address
        )
        try:
            mark = started
            first_repo_shard = _first_pass(config, ctx, engine, run, input_bytes)
            mark = run.timed("pass1_read_filter_spill", mark)
            _second_pass(config, ctx, engine, run, first_repo_shard)
            mark = run.timed("pass2_order_fim_tokenize", mark)
            if config.dedup is not None:
                run.dedup = deduplicate(
                    config.dedup,
                    config.group_bytes,
                    engine,
                    ctx.work_dir,
                    run.shards,
                    first_repo_shard,
                    run.tasks,
                    run.totals.seconds,
                )
            mark = run.timed("dedup_groupby_components", mark)
            kept = _finalize(ctx, engine, run)
            mark = run.timed("finalize_shards", mark)
            empty, run.parts = write_output(config, ctx, engine, kept, work.kept)
            run.timed("merge", mark)
        except BaseException:
            engine.close(cancel=True)
            raise
        engine.close()
        if work.kept:
            run.tasks.counts["swept_temporaries"] = work.sweep_temporaries()
    finally:
        work.remove()
    run.seconds["total"] = time.perf_counter() - started
    return _report(config, ctx, run, engine, input_bytes, empty)


def _apply(run: _Run, result: dict[str, Any]) -> PartitionStats:
    stats = stats_from_json(result["stats"])
    run.totals.merge(stats)
    return stats


def _first_pass(
    config: PreprocessConfig, ctx: WorkerContext, engine: Engine, run: _Run, input_bytes: int
) -> int:
    """Pass 1 over input references; returns the number of the first pass-2 shard."""
    refs = plan_refs(config.inputs, config.partition_bytes, config.repos_per_ref, run.totals.bad)
    if len(refs) > MAX_REFS:
        raise ValueError(f"{len(refs)} input tasks (at most {MAX_REFS}): raise --partition-mb")
    steps = [Step(layout.pass1_task(i), run_ref, RefTask(i, ref)) for i, ref in enumerate(refs)]
    progress = Progress("pass 1/2 read+filter", input_bytes, config.progress)
    chunks: dict[int, list[tuple[int, int, int]]] = {}
    run.spill = np.zeros((len(refs), ctx.buckets + 1), dtype=np.int64)
    try:
        for step, result in run_steps(engine, steps, ctx.work_dir, run.tasks):
            stats = _apply(run, result)
            read = sum(chunk[3] for chunk in result["chunks"])
            progress.update(read, stats.records, stats.text_bytes)
            chunks[step.item.index] = [
                (shard, docs, records) for shard, docs, records, _ in result["chunks"]
            ]
            ends = run.spill[step.item.index]
            for bucket, _, end in result["spill"]:  # a task's buckets follow each other in order
                ends[bucket + 1] = end
            np.maximum.accumulate(ends, out=ends)
    finally:
        progress.close()
    run.shards += [shard for index in sorted(chunks) for shard in chunks[index]]
    return len(refs) * CHUNKS_PER_REF


def _second_pass(
    config: PreprocessConfig, ctx: WorkerContext, engine: Engine, run: _Run, first: int
) -> None:
    regions: dict[int, list[Region]] = {}
    large = []
    starts, ends = run.spill[:, :-1], run.spill[:, 1:]
    sizes = (ends - starts).sum(axis=0)
    for bucket in np.flatnonzero(sizes).tolist():
        parts = tuple(
            (layout.spill_file(ctx.work_dir, ref), int(starts[ref, bucket]), int(ends[ref, bucket]))
            for ref in np.flatnonzero(ends[:, bucket] > starts[:, bucket]).tolist()
        )
        size = int(sizes[bucket])
        if size <= config.region_bytes:
            regions[bucket] = [Region(parts[0][0], 0, 0, parts=parts)]
        else:
            large.append(Step(layout.plan_task(bucket), plan_bucket, BucketTask(bucket, parts)))
    planned: Counter[str] = Counter()
    for step, result in run_steps(engine, large, ctx.work_dir, run.tasks):
        regions[step.item.bucket] = [
            Region(os.path.join(ctx.work_dir, path), *rest) for path, *rest in result["regions"]
        ]
        planned.update(result["planned"])
    ordered = [region for bucket in sorted(regions) for region in regions[bucket]]
    steps = [
        Step(layout.pass2_task(first + i), run_region, RegionTask(first + i, region))
        for i, region in enumerate(ordered)
    ]
    progress = Progress(
        "pass 2/2 order+FIM+tokenize", sum(r.size for r in ordered), config.progress
    )
    done: dict[int, tuple[int, int, int]] = {}
    try:
        for _, result in run_steps(engine, steps, ctx.work_dir, run.tasks):
            stats = _apply(run, result)
            shard, docs, records, size = result["chunks"][0]
            done[shard] = (shard, docs, records)
            progress.update(size, stats.documents, size)
    finally:
        progress.close()
    run.shards += [done[shard] for shard in sorted(done)]
    run.totals.repo.update(planned)


def _finalize(ctx: WorkerContext, engine: Engine, run: _Run) -> list[tuple[int, int]]:
    """Finalise every non-empty shard (dropping its near-duplicates); (shard, tokens) in order."""
    dedup = run.dedup.get("dropped", 0) > 0
    shards = [index for index, documents, _ in run.shards if documents]
    steps = [
        Step(
            layout.finalize_task(shards[i]),
            finalize,
            FinalizeBatch(tuple(shards[i : i + FINALIZE_BATCH]), dedup),
        )
        for i in range(0, len(shards), FINALIZE_BATCH)
    ]
    kept = {}
    for _, result in run_steps(engine, steps, ctx.work_dir, run.tasks):
        for index, documents, tokens, files in result["shards"]:
            run.out["documents"] += documents
            run.out["tokens"] += tokens
            run.out["files"] += files
            if documents:
                kept[index] = tokens
    return [(index, kept[index]) for index in sorted(kept)]


def _report(
    config: PreprocessConfig,
    ctx: WorkerContext,
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
        "dtype": ctx.dtype,
        "engine": config.engine,
        "workers": engine.workers,
        "seed": config.seed,
        "fim_rate": config.fim_rate,
        "fim_spm_rate": config.fim_spm_rate,
        "bos": config.bos,
        "eos_id": ctx.eos,
        "bos_id": ctx.bos,
        "buckets": ctx.buckets,
        "shards": len(run.shards),
        "tasks": dict(sorted(run.tasks.counts.items())),
        "task_seconds": {k: round(v, 3) for k, v in sorted(run.tasks.seconds.items())},
        "output_parts": run.parts,
        "input_bytes": input_bytes,
        "bin_bytes": 0 if empty or run.parts else os.path.getsize(f"{config.output_prefix}.bin"),
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
    bands, rows = band_layout(config.dedup) if config.dedup else (0, 0)
    document["dedup"] = {
        "enabled": config.dedup is not None,
        **(
            {
                "ngram": config.dedup.ngram,
                "num_perm": config.dedup.num_perm,
                "threshold": config.dedup.threshold,
                "bands": bands,
                "rows": rows,
                "verify": config.dedup.verify,
                "scheme": config.dedup.scheme,
            }
            if config.dedup
            else {}
        ),
        **run.dedup,
    }
    if config.stats_json:
        write_stats(config.stats_json, document)
    if empty is not None:
        raise empty
    return document
