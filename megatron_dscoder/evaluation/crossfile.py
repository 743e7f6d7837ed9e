"""Cross-file context for completion: BM25 retrieval over the rest of the repository.

The paper's CrossCodeEval setup (Table 7) puts up to 512 tokens of code retrieved with BM25
from the repository's other files before the file being completed. With it, DeepSeek-Coder-Base
6.7B's Python exact match rises from 9.53 % to 16.14 %. This module builds such a prompt:

1. Every other code file of the repository (the same language, by extension) is cut into
   windows of :data:`CHUNK_LINES` lines, each window starting :data:`CHUNK_STRIDE` lines after
   the previous one.
2. The query is the last :data:`QUERY_LINES` lines before the cursor.
3. Identifiers are the BM25 terms. ``bm25s`` ranks the windows, and no two overlapping
   windows of one file are kept.
4. The best windows fill ``budget`` tokens of the model's tokenizer, each window headed by its
   file's path comment as in pretraining
   (:func:`~megatron_dscoder.preprocess.records.with_path_comment`). The best window goes last,
   next to the code being completed; then comes the file itself under its own path comment.

    prompt, chunks = cross_file_prompt(repo, "json/__init__.py", prefix, count_tokens)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from megatron_dscoder.preprocess.records import language_of, with_path_comment

logger = logging.getLogger(__name__)

CHUNK_LINES = 10
CHUNK_STRIDE = 5
QUERY_LINES = 10
DEFAULT_BUDGET = 512
MAX_FILE_BYTES = 1 << 20
"""Larger files (generated code, data) are not indexed."""
SKIPPED_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", "build", "dist"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Chunk:
    """A window of one repository file."""

    path: str
    """Relative to the repository, with forward slashes."""
    first_line: int
    text: str


def terms(text: str) -> list[str]:
    """BM25 terms of code: its identifiers, lower-cased (``JSONDecoder`` meets ``jsondecoder``)."""
    return [t.lower() for t in _IDENTIFIER.findall(text)]


def repository_files(repo: Path, language: str) -> Iterator[tuple[str, str]]:
    """(relative path, text) of the repository's readable files in ``language``, sorted."""
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if any(part in SKIPPED_DIRS for part in rel.parts) or not path.is_file():
            continue
        if language_of("", rel.as_posix()) != language or path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            yield rel.as_posix(), path.read_text("utf-8")
        except (UnicodeDecodeError, OSError):
            logger.info("skipped unreadable %s", rel)


def chunks_of(path: str, text: str) -> list[Chunk]:
    """Windows of :data:`CHUNK_LINES` lines every :data:`CHUNK_STRIDE` lines (blank ones
    dropped; the last window ends at the end of the file)."""
    lines = text.splitlines(keepends=True)
    starts = range(0, max(len(lines) - CHUNK_LINES, 0) + 1, CHUNK_STRIDE)
    out = [Chunk(path, i + 1, "".join(lines[i : i + CHUNK_LINES])) for i in starts]
    if lines and (len(lines) - CHUNK_LINES) % CHUNK_STRIDE and len(lines) > CHUNK_LINES:
        out.append(Chunk(path, len(lines) - CHUNK_LINES + 1, "".join(lines[-CHUNK_LINES:])))
    return [c for c in out if c.text.strip()]


def retrieve(chunks: list[Chunk], query: str, k: int) -> list[Chunk]:
    """The ``k`` best chunks for ``query`` by BM25 (bm25s, Lucene scoring), best first; chunks
    with no term in common with the query are never returned."""
    import bm25s

    query_terms = terms(query)
    if not chunks or not query_terms:
        return []
    index = bm25s.BM25()
    index.index([terms(c.text) or [""] for c in chunks], show_progress=False)
    known = [t for t in query_terms if t in index.vocab_dict]  # repeated terms weigh more
    if not known:
        return []
    found, scores = index.retrieve([known], k=min(k, len(chunks)), show_progress=False)
    return [chunks[int(i)] for i, s in zip(found[0], scores[0], strict=True) if s > 0]


def _overlaps(a: Chunk, b: Chunk) -> bool:
    return a.path == b.path and abs(a.first_line - b.first_line) < CHUNK_LINES


def cross_file_prompt(
    repo: str | Path,
    file: str,
    prefix: str,
    count_tokens: Callable[[str], int],
    *,
    budget: int = DEFAULT_BUDGET,
) -> tuple[str, list[Chunk]]:
    """(prompt, chunks used): retrieved context within ``budget`` tokens, then ``prefix`` (the
    text of ``file`` before the cursor) under ``file``'s path comment."""
    repo = Path(repo)
    rel = (repo / file).resolve().relative_to(repo.resolve()).as_posix()  # "./a.py" is "a.py"
    language = language_of("", rel)
    candidates = [
        chunk
        for path, text in repository_files(repo, language)
        if path != rel
        for chunk in chunks_of(path, text)
    ]
    query = "".join(prefix.splitlines(keepends=True)[-QUERY_LINES:])
    chosen: list[Chunk] = []
    used = 0
    for chunk in retrieve(candidates, query, k=64):
        if any(_overlaps(chunk, c) for c in chosen):
            continue
        cost = count_tokens(with_path_comment(language, chunk.path, chunk.text))
        if used + cost > budget:
            continue
        chosen.append(chunk)
        used += cost
    context = "".join(with_path_comment(language, c.path, c.text) for c in reversed(chosen))
    own = with_path_comment(language, rel, prefix)
    own = own if prefix.endswith("\n") else own[:-1]  # the cursor stays where the prefix ends
    return context + own, chosen
