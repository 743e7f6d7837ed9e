"""FIM single-line infilling: one line per sampled position of a held-out code corpus is removed;
the model gets the PSM prompt with the text before the line as prefix and the text after it as
suffix; its first generated line must equal the removed one (ignoring surrounding whitespace)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from megatron_dscoder.evaluation.generate import truncate_at
from megatron_dscoder.evaluation.model import CodeModel

CODE_SUFFIXES = (
    ".py",
    ".java",
    ".js",
    ".ts",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".go",
    ".rs",
    ".rb",
    ".php",
    ".cs",
    ".kt",
    ".scala",
    ".swift",
    ".sh",
    ".lua",
)


@dataclass(frozen=True)
class FimExample:
    source: str
    line: int
    prefix: str
    middle: str
    suffix: str


def corpus_texts(path: str | Path) -> Iterable[tuple[str, str]]:
    """(name, text) of code files under a directory, a code file, or a JSONL's content/text."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CODE_SUFFIXES)
    else:
        files = [path]
    for file in files:
        if file.suffix == ".jsonl":
            try:
                lines = file.read_text("utf-8").splitlines()
            except (OSError, ValueError) as err:
                raise ValueError(f"--fim-corpus {file}: {err}") from None
            for n, line in enumerate(lines):
                try:
                    record = json.loads(line) if line.strip() else {}
                except ValueError as err:
                    raise ValueError(f"--fim-corpus {file}, line {n + 1}: {err}") from None
                text = (
                    record.get("content", record.get("text")) if isinstance(record, dict) else None
                )
                if isinstance(text, str):
                    yield f"{file.name}:{n}", text
        else:
            yield str(file), file.read_text("utf-8", errors="replace")


def fim_examples(
    texts: Iterable[tuple[str, str]],
    *,
    lines_per_file: int = 1,
    max_examples: int = 500,
    seed: int = 0,
) -> list[FimExample]:
    """Held-out lines, sampled reproducibly: non-blank lines of at most 200 characters."""
    rng = random.Random(seed)
    examples: list[FimExample] = []
    for name, text in texts:
        lines = text.splitlines(keepends=True)
        candidates = [i for i, line in enumerate(lines) if 0 < len(line.strip()) <= 200]
        for i in sorted(rng.sample(candidates, min(lines_per_file, len(candidates)))):
            content = lines[i].rstrip("\r\n")
            examples.append(
                FimExample(
                    name,
                    i + 1,
                    "".join(lines[:i]),
                    content,
                    lines[i][len(content) :] + "".join(lines[i + 1 :]),
                )
            )
            if len(examples) >= max_examples:
                return examples
    return examples


def evaluate_fim(
    model: CodeModel, examples: Sequence[FimExample], *, max_new_tokens: int = 64
) -> tuple[dict, list[dict]]:
    """Exact match of the first infilled line against the removed line."""
    records = []
    for ex in examples:
        middle = model.infill(ex.prefix, ex.suffix, max_new_tokens=max_new_tokens, stop=("\n",))
        prediction = truncate_at(middle, ("\n",))
        records.append(
            {
                "source": ex.source,
                "line": ex.line,
                "expected": ex.middle,
                "prediction": prediction,
                "exact_match": prediction.strip() == ex.middle.strip(),
            }
        )
    hits = sum(r["exact_match"] for r in records)
    return {
        "examples": len(records),
        "exact_match": hits / len(records) if records else 0.0,
    }, records
