"""Counters of a run (merged across partitions and workers), the stats JSON, and the progress bar.

Every partition stage reports into a :class:`PartitionStats`; the orchestrator merges them in
task order, so the totals are the same for any worker count (only the timings differ). The
stats JSON (``--stats-json``) has documents in and out, drops per filter and per bad-input
reason, records or samples dropped by each partition stage (``dropped_by_stage``), FIM counts,
tokens, bytes, wall seconds per pass (``seconds``) and seconds per stage
summed over all processes (``stage_seconds_summed``: workers run in parallel, so these add up
to more than the wall time).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from megatron_dscoder.preprocess.filters import FILTER_NAMES
from megatron_dscoder.preprocess.quality import QUALITY_RULES

#: Per-language counters of the written samples (``languages`` in the stats JSON).
LANGUAGE_FIELDS = ("samples", "files", "bytes", "tokens")
#: Bad-input reasons that describe a whole input file rather than one record.
FILE_REASONS = frozenset({"unreadable_file", "empty_file"})


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
        for name in ("bad", "skipped", "filtered", "quality", "syntax", "languages", "repo", "fim",
                     "decontam", "dropped", "seconds"):  # fmt: skip
            getattr(self, name).update(getattr(other, name))

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``seconds[stage]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def stats_document(
    totals: PartitionStats, run: dict[str, Any], pass_seconds: dict[str, float]
) -> dict[str, Any]:
    """The stats JSON object."""
    bad_records = sum(n for reason, n in totals.bad.items() if reason not in FILE_REASONS)
    return {
        **run,
        "documents_in": totals.records + bad_records,
        "records_read": totals.records,
        "documents_out": totals.documents,
        "files_out": totals.files,
        "tokens": totals.tokens,
        "text_bytes_in": totals.text_bytes,
        "bad_input": dict(sorted(totals.bad.items())),
        "skipped": dict(sorted(totals.skipped.items())),
        "filtered": {name: totals.filtered.get(name, 0) for name in FILTER_NAMES},
        "quality": {name: totals.quality.get(name, 0) for name in QUALITY_RULES},
        "syntax": syntax_table(totals.syntax),
        "languages": language_table(totals.languages),
        "repo_level": dict(sorted(totals.repo.items())),
        "fim": {mode: totals.fim.get(mode, 0) for mode in ("psm", "spm", "plain")},
        "dropped_by_stage": dict(sorted(totals.dropped.items())),
        "seconds": {k: round(v, 3) for k, v in pass_seconds.items()},
        "stage_seconds_summed": {k: round(v, 3) for k, v in sorted(totals.seconds.items())},
    }


def syntax_table(counts: Counter[str]) -> dict[str, Any]:
    """{"LANG": {"parsed": n, "dropped": n}, ..., "unchecked": n} from the ``syntax`` counter."""
    table: dict[str, Any] = {}
    for key, n in sorted(counts.items()):
        lang, _, what = key.partition(":")
        if lang == "unchecked":
            continue
        table.setdefault(lang, {"parsed": 0, "dropped": 0})[what or "parsed"] += n
    table["unchecked"] = counts.get("unchecked", 0)
    return table


def language_table(counts: Counter[str]) -> dict[str, dict[str, int]]:
    """Per language of the samples written (before near-dedup): samples, files, bytes, tokens;
    languages by bytes, largest first."""
    table: dict[str, dict[str, int]] = {}
    for key, n in counts.items():
        lang, _, what = key.rpartition(":")
        row = table.setdefault(lang or "unknown", dict.fromkeys(LANGUAGE_FIELDS, 0))
        row[what] += n
    return dict(sorted(table.items(), key=lambda kv: (-kv[1]["bytes"], kv[0])))


def write_stats(path: str, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, ensure_ascii=False)
        f.write("\n")


class Progress:
    """A tqdm bar on stderr over input bytes, with documents/s and text MB/s."""

    def __init__(self, desc: str, total: int, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
            file=sys.stderr, disable=not enabled, dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        self.start = time.perf_counter()
        self.documents = 0
        self.text_bytes = 0

    def update(self, input_bytes: int, documents: int, text_bytes: int) -> None:
        self.documents += documents
        self.text_bytes += text_bytes
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(
            docs_s=f"{self.documents / elapsed:,.0f}",
            text_MB_s=f"{self.text_bytes / elapsed / 1e6:.2f}",
            refresh=False,
        )
        self.bar.update(input_bytes)

    def close(self) -> None:
        self.bar.close()
