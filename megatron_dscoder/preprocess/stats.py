"""The counters of a run: one :class:`PartitionStats` per partition, merged across partitions
and workers, and their JSON round trip (a task's completion marker stores them).

Every partition stage reports into a :class:`PartitionStats`; the driver merges them in
task order, so the totals are the same for any worker count (only the timings differ). The
stats JSON (``--stats-json``, written by :mod:`megatron_dscoder.preprocess.report.stats_json`)
has documents in and out, drops per filter and per bad-input
reason, records or samples dropped by each partition stage (``dropped_by_stage``), FIM counts,
tokens, bytes, wall seconds per pass (``seconds``) and seconds per stage
summed over all processes (``stage_seconds_summed``: workers run in parallel, so these add up
to more than the wall time).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PartitionStats:
    """What one or more partitions did."""

    records: int = 0
    text_bytes: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    repo: Counter[str] = field(default_factory=Counter)
    fim: Counter[str] = field(default_factory=Counter)
    quality: Counter[str] = field(default_factory=Counter)  # files dropped per quality rule
    syntax: Counter[str] = field(default_factory=Counter)  # files parsed (LANG, LANG:dropped)
    languages: Counter[str] = field(default_factory=Counter)  # LANG:files/bytes/tokens/samples
    decontam: Counter[str] = field(default_factory=Counter)  # samples matching each benchmark
    decontaminated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # records or samples, per stage
    documents: int = 0
    files: int = 0
    tokens: int = 0
    seconds: Counter[str] = field(default_factory=Counter)

    def merge(self, other: PartitionStats) -> None:
        self.records += other.records
        self.text_bytes += other.text_bytes
        self.documents += other.documents
        self.files += other.files
        self.tokens += other.tokens
        self.decontaminated += other.decontaminated
        for name in (
            "bad",
            "skipped",
            "filtered",
            "quality",
            "syntax",
            "languages",
            "repo",
            "fim",
            "decontam",
            "dropped",
            "seconds",
        ):
            getattr(self, name).update(getattr(other, name))

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``seconds[stage]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def stats_to_json(stats: PartitionStats) -> dict[str, Any]:
    """Counters as ``[key, count]`` lists (some keys are tuples, which JSON objects refuse)."""
    return {
        f.name: list(value.items()) if isinstance(value, Counter) else value
        for f in dataclasses.fields(stats)
        for value in (getattr(stats, f.name),)
    }


def stats_from_json(data: dict[str, Any]) -> PartitionStats:
    return PartitionStats(
        **{
            k: Counter({tuple(a) if isinstance(a, list) else a: n for a, n in v})
            if isinstance(v, list)
            else v
            for k, v in data.items()
        }
    )
