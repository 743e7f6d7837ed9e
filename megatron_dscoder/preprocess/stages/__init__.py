"""The per-partition stages, and the two ordered lists that run them.

Every partition runs the enabled stages of two lists, in order
(:func:`megatron_dscoder.preprocess.partition.map_chunk` and ``reduce_region`` run them):
:data:`RECORD_STAGES` on the files read from an input chunk (before they are split into
repository-level and file-level records), :data:`SAMPLE_STAGES` on the samples of a partition
(single files in pass 1, Algorithm 1 repository samples in pass 2). A stage is
``Stage(name, enabled, run)``: ``enabled(options)`` says whether its flag switches it on,
``run(items, ctx, stats)`` returns the items that go on (records; or the
:class:`~.base.Batch` of samples). The runner times each stage as
``stage_seconds_summed[name]`` and counts the items it drops as ``dropped_by_stage[name]`` in
the stats JSON.

One module per stage (the stage function last in it): :mod:`.filters`, :mod:`.quality`
(parsers in :mod:`.syntax`), :mod:`.minhash`, :mod:`.decontam`, :mod:`.fim`, :mod:`.encode`
(repeated lines in :mod:`.line_encode`); :mod:`.base` holds what they all receive. Adding a
stage with a flag is written once, in ``docs/ARCHITECTURE.md`` ("A preprocessing stage").
"""

from __future__ import annotations

from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.stages.base import Batch, Stage, WorkerContext
from megatron_dscoder.preprocess.stages.decontam import decontaminate_stage
from megatron_dscoder.preprocess.stages.encode import tokenize_stage
from megatron_dscoder.preprocess.stages.filters import filter_stage
from megatron_dscoder.preprocess.stages.fim import fim_stage
from megatron_dscoder.preprocess.stages.minhash import minhash_stage, word_hashes_stage
from megatron_dscoder.preprocess.stages.quality import quality_stage
from megatron_dscoder.preprocess.stats import PartitionStats


def hooks_stage(batch: Batch, ctx: WorkerContext, stats: PartitionStats) -> Batch:
    """The library users' sample hooks, in order (``PreprocessConfig.sample_hooks``)."""
    for hook in ctx.options.sample_hooks:
        batch.samples = hook(batch.samples, stats)
    return batch


def _always(_: PreprocessConfig) -> bool:
    return True


def _hashes_words(o: PreprocessConfig) -> bool:
    return o.decontam is not None or o.dedup is not None


#: On the records of an input chunk, before they are split by level (in order).
RECORD_STAGES: list[Stage] = [
    Stage("filter", lambda o: o.apply_filters, filter_stage),
    Stage("quality", lambda o: o.quality is not None, quality_stage),
]
#: On the samples of a partition, up to their tokens (in order).
SAMPLE_STAGES: list[Stage] = [
    Stage("hooks", _always, hooks_stage),
    Stage("word_hashes", _hashes_words, word_hashes_stage),
    Stage("decontaminate", lambda o: o.decontam is not None, decontaminate_stage),
    Stage("minhash", lambda o: o.dedup is not None, minhash_stage),
    Stage("fim", _always, fim_stage),
    Stage("tokenize", _always, tokenize_stage),
]
