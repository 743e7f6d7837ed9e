"""The data report: the processed corpus in the shape of DeepSeek-Coder's Table 1, and its drops.

From the stats JSON of a run (nothing is recounted), :func:`write_report` writes into a
directory:

- ``report.md``: per language, the samples' bytes, files, share of bytes and tokens (Table 1 of
  the paper: language, #files, volume, ratio), then the drops of every stage: bad input, the
  paper's filters per rule, quality screening per rule and parses per language, benchmark
  decontamination hits, near-dedup clusters and dropped samples, and the FIM modes;
- ``languages.png``: bytes and tokens per language (horizontal bars, largest first);
- ``drops.png``: files or samples dropped per stage and rule.

The per-language table counts the samples written before near-deduplication (dedup drops are
corpus-wide and listed with the stages). Run it with ``tools/preprocess_data.py --report DIR``
or on an existing stats file with
``python -m megatron_dscoder.preprocess.report.markdown STATS DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TOP_LANGUAGES = 20


def language_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 1 rows: language, files, bytes, share of bytes (%), tokens; largest first."""
    table = stats.get("languages", {})
    total = sum(row["bytes"] for row in table.values()) or 1
    return [
        {
            "language": lang,
            "files": row["files"],
            "bytes": row["bytes"],
            "share": 100.0 * row["bytes"] / total,
            "tokens": row["tokens"],
        }
        for lang, row in table.items()
    ]


def drop_rows(stats: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(stage, reason, count) of every drop the run counted."""
    rows = [("bad input", reason, n) for reason, n in stats.get("bad_input", {}).items()]
    rows += [("filters", rule, n) for rule, n in stats.get("filtered", {}).items()]
    rows += [("quality", rule, n) for rule, n in stats.get("quality", {}).items()]
    syntax = stats.get("syntax", {})
    rows += [
        ("syntax", lang, row["dropped"]) for lang, row in syntax.items() if isinstance(row, dict)
    ]
    rows += [
        ("decontamination", bench, n)
        for bench, n in stats.get("decontamination", {}).get("hits", {}).items()
    ]
    dedup = stats.get("dedup", {})
    rows += [("dedup", key, dedup[key]) for key in ("clusters", "dropped") if key in dedup]
    return rows


def _markdown(stats: dict[str, Any]) -> str:
    lines = [
        "# Data report",
        "",
        f"Input: {stats.get('records_read', 0):,} records, {stats.get('text_bytes_in', 0):,} "
        f"bytes of text. Output: {stats.get('documents_out', 0):,} documents, "
        f"{stats.get('files_out', 0):,} files, {stats.get('tokens', 0):,} tokens "
        f"(BOS: {'yes' if stats.get('bos') else 'no'}; EOS after every document).",
        "",
        "## Languages (samples written, before near-dedup)",
        "",
        "![bytes and tokens per language](languages.png)",
        "",
        "| language | files | bytes | share (%) | tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in language_rows(stats):
        lines.append(
            f"| {row['language']} | {row['files']:,} | {row['bytes']:,} | {row['share']:.2f} "
            f"| {row['tokens']:,} |"
        )
    lines += [
        "",
        "## Drops per stage",
        "",
        "![drops per stage](drops.png)",
        "",
        "| stage | reason | count |",
        "|---|---|---:|",
    ]
    lines += [f"| {stage} | {reason} | {n:,} |" for stage, reason, n in drop_rows(stats)]
    syntax = {k: v for k, v in stats.get("syntax", {}).items() if isinstance(v, dict)}
    if syntax:
        lines += [
            "",
            "## Parses per language",
            "",
            "| language | parsed | dropped |",
            "|---|---:|---:|",
        ]
        lines += [f"| {lang} | {r['parsed']:,} | {r['dropped']:,} |" for lang, r in syntax.items()]
        lines.append(f"\nNot parsed (no grammar): {stats['syntax'].get('unchecked', 0):,} files.")
    fim = stats.get("fim", {})
    lines += ["", "FIM: " + ", ".join(f"{mode} {n:,}" for mode, n in fim.items()), ""]
    return "\n".join(lines)


def _charts(stats: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = language_rows(stats)[:TOP_LANGUAGES][::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.4 * len(rows) + 1.5), sharey=True)
    names = [r["language"] for r in rows]
    axes[0].barh(names, [r["bytes"] / 1e6 for r in rows], color="tab:blue")
    axes[0].set_xlabel("MB of text")
    axes[1].barh(names, [r["tokens"] / 1e6 for r in rows], color="tab:orange")
    axes[1].set_xlabel("million tokens")
    fig.suptitle("Processed corpus per language")
    fig.tight_layout()
    fig.savefig(out / "languages.png.tmp", format="png", dpi=100)
    plt.close(fig)
    drops = [(f"{stage}: {reason}", n) for stage, reason, n in drop_rows(stats) if n][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(drops) + 1.5))
    ax.barh([d[0] for d in drops] or ["nothing dropped"], [d[1] for d in drops] or [0])
    ax.set_xlabel("files / samples dropped")
    ax.set_title("Drops per stage")
    fig.tight_layout()
    fig.savefig(out / "drops.png.tmp", format="png", dpi=100)
    plt.close(fig)


def write_report(stats: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``report.md``, ``languages.png`` and ``drops.png`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _charts(stats, out)
    (out / "report.md.tmp").write_text(_markdown(stats), encoding="utf-8")
    for name in ("languages.png", "drops.png", "report.md"):
        os.replace(out / f"{name}.tmp", out / name)
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    """``python -m megatron_dscoder.preprocess.report.markdown STATS_JSON OUT_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write(
            "usage: python -m megatron_dscoder.preprocess.report.markdown STATS_JSON DIR\n"
        )
        return 2
    stats = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    sys.stdout.write(f"wrote {write_report(stats, args[1])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
