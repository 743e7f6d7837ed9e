"""What every stage receives: the worker's context, a partition's samples on their way to
tokens, and the runner of a stage list.

A stage is a function ``(items, ctx, stats) -> items``: ``items`` are the records of an input
chunk (record stages) or the :class:`Batch` of a partition's samples (sample stages), ``ctx``
the :class:`WorkerContext`, and ``stats`` the partition's
:class:`~megatron_dscoder.preprocess.stats.PartitionStats`. The lists of stages, and how to add
one, are in :mod:`megatron_dscoder.preprocess.stages`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.records import EncodedPartition, Piece, Sample
from megatron_dscoder.preprocess.stats import PartitionStats


@dataclass(frozen=True)
class WorkerContext:
    """What every task gets on a worker: the run's options, and only what the driver resolved
    from them and the tokenizer (:func:`megatron_dscoder.preprocess.pipeline.worker_context`);
    small and picklable."""

    options: PreprocessConfig
    eos: int
    dtype: str
    buckets: int
    bos: int | None = None
    sentinels: tuple[int, int, int] = (-1, -1, -1)
    """FIM begin, hole, end ids (-1 without FIM)."""
    work_dir: str = ""


@dataclass
class Batch:
    """A partition's samples on their way to tokens; each sample stage fills in its part."""

    samples: list[Sample]
    words: np.ndarray | None = None  # word hashes of the samples' texts (:mod:`.minhash`)
    text_of: np.ndarray | None = None  # the sample of each word
    signatures: np.ndarray | None = None  # MinHash, one row per sample (None without dedup)
    documents: list[list[Piece]] | None = None  # after FIM
    encoded: EncodedPartition | None = None  # after tokenisation


class Stage(NamedTuple):
    """One per-partition stage: its name in the stats, whether the options switch it on, and
    ``run(items, ctx, stats) -> items``."""

    name: str
    enabled: Callable[[PreprocessConfig], bool]
    run: Callable[[Any, WorkerContext, PartitionStats], Any]


def run_stages(stages: list[Stage], items: Any, ctx: WorkerContext, stats: PartitionStats) -> Any:
    """The enabled ``stages`` in order, each timed (``seconds[name]``) and its drops counted
    (``dropped[name]``: records, or the samples of a :class:`Batch`)."""
    size = (lambda b: len(b.samples)) if isinstance(items, Batch) else len
    for stage in stages:
        if not stage.enabled(ctx.options):
            continue
        before = size(items)
        with stats.timed(stage.name):
            items = stage.run(items, ctx, stats)
        if dropped := before - size(items):
            stats.dropped[stage.name] += dropped
    return items
