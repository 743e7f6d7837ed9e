"""Tokenising each distinct line of a batch once (for :mod:`.encode`).

About a fifth of the lines of real code repeat within a batch of about 1 MB (blank lines,
closing brackets, licence headers, common statements). With a tokenizer for which cutting a
text right after a newline never changes its tokens
(:func:`~megatron_dscoder.tokenizer.newline_safe`) and which encodes a newline as one token, the
distinct lines of a batch are joined into texts of about ``chunk_chars`` characters (so the
tokenizer's threads get a few calls, not one per line), encoded once, split again at their newline
tokens (each line has exactly one, its last; this is checked, and the caller encodes the batch whole
if it fails), and the tokens of every chunk are gathered from the lines' tokens with numpy. The
tokens are exactly those of encoding each chunk whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class LineCut:
    """How to encode distinct lines: the newline's one token, texts of about ``chars``."""

    newline: int
    chars: int


def line_cut(tok: Tokenizer, chunk_chars: int | None) -> LineCut | None:
    """A :class:`LineCut` for a :func:`~megatron_dscoder.tokenizer.newline_safe` tokenizer
    (``chunk_chars`` set) that encodes a newline as one token; else None."""
    if chunk_chars is None:
        return None
    ids = tok.encode_batch_fast(["\n"], add_special_tokens=False)[0].ids
    return LineCut(ids[0], chunk_chars) if len(ids) == 1 else None


def _flat(ids: list[list[int]], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(the ids concatenated, the size of each list)."""
    sizes = np.fromiter(map(len, ids), np.int64, len(ids))
    return np.fromiter(chain.from_iterable(ids), dtype, int(sizes.sum())), sizes


def encode_lines(
    batch: list[str], tok: Tokenizer, dtype: np.dtype, cut: LineCut
) -> list[np.ndarray] | None:
    """The ids of each chunk, encoding each distinct line of the batch once (code repeats
    lines: blank ones, closing brackets, licence headers); None if the newline tokens do not
    delimit the lines (then nothing is assumed).

    The distinct lines are joined into texts of about ``cut.chars`` characters (a few calls'
    worth for the tokenizer's threads, not one per line); cutting right after a newline does not
    change tokens, and each line's tokens end at its newline token, the only one it has. The
    chunks' tokens are then gathered from the lines' tokens with numpy.
    """
    slots: dict[str, int] = {}  # distinct lines ending with a newline (key: without it)
    tails: dict[str, int] = {}  # distinct chunk ends without a newline
    order: list[int] = []  # every line: its slot, or -1 - its tail
    ends: list[int] = []  # lines up to the end of each chunk
    for chunk in batch:
        lines = chunk.split("\n")
        last = lines.pop()
        order += [slots.setdefault(line, len(slots)) for line in lines]
        if last:
            order.append(-1 - tails.setdefault(last, len(tails)))
        ends.append(len(order))
    keys = list(slots)
    texts = []
    if keys:
        stops = np.cumsum(np.fromiter(map(len, keys), np.int64, len(keys)) + 1)
        full = np.searchsorted(stops, np.arange(cut.chars, stops[-1], cut.chars)) + 1
        bounds = sorted({0, *full.tolist(), len(keys)})
        texts = ["\n".join(keys[a:b]) + "\n" for a, b in zip(bounds, bounds[1:], strict=False)]
    ids = [e.ids for e in tok.encode_batch_fast(texts + list(tails), add_special_tokens=False)]
    body, _ = _flat(ids[: len(texts)], dtype)
    line_ends = np.flatnonzero(body == cut.newline) + 1
    if line_ends.size != len(keys):
        return None
    tail, tail_sizes = _flat(ids[len(texts) :], dtype)
    flat = np.concatenate([body, tail])
    sizes = np.concatenate([np.diff(line_ends, prepend=0), tail_sizes])
    line = np.asarray(order, dtype=np.int64)
    line[line < 0] = len(keys) - 1 - line[line < 0]
    line_sizes = sizes[line]
    line_stops = np.cumsum(line_sizes)
    shift = (np.cumsum(sizes) - sizes)[line] - (line_stops - line_sizes)
    tokens = flat[np.repeat(shift, line_sizes) + np.arange(line_stops[-1])]
    return np.split(tokens, line_stops[np.asarray(ends[:-1], dtype=np.int64) - 1])
