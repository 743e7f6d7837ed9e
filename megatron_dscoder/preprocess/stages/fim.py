"""Fill-in-the-middle at document level, before packing (DeepSeek-Coder §3.1.2).

With probability ``rate`` a sample is cut at two uniform *character* positions in
``[0, len(text)]`` (sorted; any part may be empty) into prefix / middle / suffix, which are
tokenised separately and laid out with DeepSeek-Coder's sentinels:

- PSM (the paper's recipe)::

      <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜> middle <｜end▁of▁sentence｜>

- SPM (with probability ``spm_rate`` among FIM samples), the "SPM variant 2" layout of
  Bavarian et al. (2022), also used by StarCoder/Megatron: the same three sentinels, with the
  suffix first, so that prefix and middle form one contiguous text after ``<｜fim▁end｜>``::

      <｜fim▁begin｜><｜fim▁hole｜> suffix <｜fim▁end｜> prefix middle <｜end▁of▁sentence｜>

All randomness comes from ``blake2b(seed, sample key)`` (the key names the repository and its
files), never from a stateful RNG, so the decision and the cut points of a sample do not depend
on the worker count, the order of processing, or on restarts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from megatron_dscoder.preprocess.records import Piece, Sample
from megatron_dscoder.preprocess.stages.base import Batch, WorkerContext
from megatron_dscoder.preprocess.stats import PartitionStats

_TWO_64 = float(1 << 64)


@dataclass(frozen=True)
class FimConfig:
    """FIM rates, the seed, and the sentinel ids (begin, hole, end) of the tokenizer.

    Resolved for the workers from the run's options (``--fim-rate``, ``--fim-spm-rate``,
    ``--seed``, where their defaults live) and the tokenizer's sentinels: :func:`fim_config`.
    """

    rate: float
    spm_rate: float
    seed: int
    begin: int = -1
    hole: int = -1
    end: int = -1


@dataclass(frozen=True)
class FimDraw:
    """The random choices for one sample."""

    apply: bool
    spm: bool
    cut_a: int
    cut_b: int


def draw(key: str, length: int, config: FimConfig) -> FimDraw:
    """Deterministic FIM choices for the sample ``key`` of ``length`` characters."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=32, key=config.seed.to_bytes(8, "little")
    ).digest()
    u_apply, u_spm, r_a, r_b = (
        int.from_bytes(digest[i : i + 8], "little") for i in range(0, 32, 8)
    )
    a, b = r_a % (length + 1), r_b % (length + 1)
    return FimDraw(
        apply=u_apply / _TWO_64 < config.rate,
        spm=u_spm / _TWO_64 < config.spm_rate,
        cut_a=min(a, b),
        cut_b=max(a, b),
    )


def fim_pieces(text: str, key: str, config: FimConfig) -> tuple[list[Piece], str]:
    """(pieces, mode) for one sample; mode is 'psm', 'spm' or 'plain'."""
    if config.rate <= 0:
        return [text], "plain"
    choice = draw(key, len(text), config)
    if not choice.apply:
        return [text], "plain"
    prefix, middle, suffix = (
        text[: choice.cut_a],
        text[choice.cut_a : choice.cut_b],
        text[choice.cut_b :],
    )
    if choice.spm:
        return [config.begin, config.hole, suffix, config.end, prefix, middle], "spm"
    return [config.begin, prefix, config.hole, suffix, config.end, middle], "psm"


def fim_config(ctx: WorkerContext) -> FimConfig:
    """The FIM settings of a run, from its options and the sentinel ids the driver resolved."""
    begin, hole, end = ctx.sentinels
    o = ctx.options
    return FimConfig(o.fim_rate, o.fim_spm_rate, o.seed, begin, hole, end)


def apply_fim(
    samples: Iterable[Sample], config: FimConfig, counters: Counter[str]
) -> list[list[Piece]]:
    """Partition stage: FIM-transform samples into piece lists; counts modes in ``counters``."""
    documents = []
    for sample in samples:
        pieces, mode = fim_pieces(sample.text, sample.key, config)
        counters[mode] += 1
        documents.append(pieces)
    return documents


def fim_stage(batch: Batch, ctx: WorkerContext, stats: PartitionStats) -> Batch:
    """The sample stage: every sample becomes a document (pieces); the
    modes are counted in ``fim``."""
    batch.documents = apply_fim(batch.samples, fim_config(ctx), stats.fim)
    return batch
