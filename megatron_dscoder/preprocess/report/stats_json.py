"""The stats JSON of a run (``--stats-json``): the merged counters laid out per filter, rule,
language and stage, next to the run's settings and wall seconds per pass."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from megatron_dscoder.preprocess.stages.filters import FILTER_NAMES
from megatron_dscoder.preprocess.stages.quality import QUALITY_RULES
from megatron_dscoder.preprocess.stats import PartitionStats

#: Per-language counters of the written samples (``languages`` in the stats JSON).
LANGUAGE_FIELDS = ("samples", "files", "bytes", "tokens")
#: Bad-input reasons that describe a whole input file rather than one record.
FILE_REASONS = frozenset({"unreadable_file", "empty_file"})


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
