"""Batched tokenisation of documents into flat token arrays (no per-token Python loops).

Each document is a list of pieces (text to encode, or a literal token id such as a FIM
sentinel); EOS is appended to every document. The text of a partition goes through
``Tokenizer.encode_batch_fast`` in batches of about ``batch_chars`` characters, whatever the
document sizes (large enough for the tokenizer's thread pool, small enough to bound the memory
of its ``Encoding`` objects), and each chunk's ids become a numpy array straight away.

Text is encoded by :func:`~megatron_dscoder.tokenizer.text_tokenizer`, a copy of the tokenizer whose
added tokens are all flagged special and skipped (``encode_special_tokens = True``), so that source
code containing the literal text of *any* added token (``<pad>``, ``<|EOT|>``, a FIM sentinel, or
one of the 13 Latin-1 characters DeepSeek-Coder's tokenizer adds as non-special tokens) is encoded
by the BPE model as ordinary text: the only control ids in the output are those the pipeline inserts
(FIM sentinels, EOS, and BOS when chosen). On text without such literals the ids equal the original
tokenizer's (``transformers`` included); decoding with the original tokenizer returns the text.

Long texts (a repository sample can be many MB) are cut into chunks of about ``chunk_chars``
right after a newline, when the tokenizer's pre-tokenizer isolates every newline (DeepSeek-Coder's
does: ``[\r\n]`` is its first split rule; :func:`~megatron_dscoder.tokenizer.newline_safe` checks
it). The tokens are then exactly those of the whole text, while the tokenizer's per-text memory
stays small and its thread pool gets many pieces to share instead of one huge one. With such a
tokenizer, each distinct line of a batch is encoded once (:mod:`.line_encode`): about a fifth of the
lines of real code repeat within a batch, and their tokens are copied instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from megatron_dscoder.preprocess.config import BATCH_CHARS, CHUNK_CHARS
from megatron_dscoder.preprocess.records import EncodedPartition, Piece
from megatron_dscoder.preprocess.stages.base import Batch, WorkerContext
from megatron_dscoder.preprocess.stages.line_encode import LineCut, encode_lines, line_cut
from megatron_dscoder.preprocess.stats import PartitionStats
from megatron_dscoder.tokenizer import get_tokenizer, newline_cuts


def split_at_newlines(text: str, chunk_chars: int | None) -> list[str]:
    """``text`` cut as :func:`newline_cuts` says."""
    starts = [0, *newline_cuts(text, chunk_chars)]
    return [text[a:b] for a, b in zip(starts, starts[1:], strict=False)]


def encode_documents(
    documents: list[list[Piece]],
    tok: Tokenizer,
    eos: int,
    dtype: npt.DTypeLike,
    batch_chars: int = BATCH_CHARS,
    chunk_chars: int | None = CHUNK_CHARS,
    bos: int | None = None,
) -> EncodedPartition:
    """Tokenise documents; each gets EOS appended (and BOS prepended when ``bos`` is set).

    ``tok`` should be a :func:`~megatron_dscoder.tokenizer.text_tokenizer`.

    Text is sent to the tokenizer in batches of about ``batch_chars`` characters whatever the
    document sizes (a document of many MB spans several batches), and every chunk's ids become
    a numpy array at once, so memory stays near the size of the output tokens.
    ``chunk_chars`` must only be set for a :func:`~megatron_dscoder.tokenizer.newline_safe`
    tokenizer (None: no chunking).
    """
    cuts = [
        newline_cuts(piece, chunk_chars)
        for pieces in documents
        for piece in pieces
        if isinstance(piece, str) and piece
    ]

    def chunks() -> Iterator[str]:
        texts = (p for pieces in documents for p in pieces if isinstance(p, str) and p)
        for text, ends in zip(texts, cuts, strict=True):
            start = 0
            for end in ends:
                yield text[start:end]
                start = end

    lines = line_cut(tok, chunk_chars)
    encoded = _encoded_chunks(chunks(), tok, np.dtype(dtype), batch_chars, lines)
    piece_cuts = iter(cuts)
    parts: list[np.ndarray] = []
    lengths = np.zeros(len(documents), dtype=np.int32)
    head = [] if bos is None else [bos]
    for index, pieces in enumerate(documents):
        size = 0
        for piece in head:
            parts.append(np.array([piece], dtype=dtype))
            size += 1
        for piece in pieces:
            if isinstance(piece, int):
                parts.append(np.array([piece], dtype=dtype))
                size += 1
            elif piece:
                for _ in next(piece_cuts):
                    part = next(encoded)
                    parts.append(part)
                    size += part.size
        parts.append(np.array([eos], dtype=dtype))
        lengths[index] = size + 1
    if not parts:
        return EncodedPartition.empty(dtype)
    return EncodedPartition(np.concatenate(parts), lengths)


def _encoded_chunks(
    chunks: Iterator[str], tok: Tokenizer, dtype: np.dtype, batch_chars: int, lines: LineCut | None
) -> Iterator[np.ndarray]:
    """The ids of each chunk, in order, encoding ``batch_chars`` characters at a time (each
    distinct line of a batch once, with ``lines``)."""
    batch: list[str] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= batch_chars:
            yield from _encode(batch, tok, dtype, lines)
            batch, size = [], 0
    if batch:
        yield from _encode(batch, tok, dtype, lines)


def _encode(
    batch: list[str], tok: Tokenizer, dtype: np.dtype, lines: LineCut | None = None
) -> list[np.ndarray]:
    if lines is not None:
        encoded = encode_lines(batch, tok, dtype, lines)
        if encoded is not None:
            return encoded
    return [
        np.array(e.ids, dtype=dtype) for e in tok.encode_batch_fast(batch, add_special_tokens=False)
    ]


def tokenize_stage(batch: Batch, ctx: WorkerContext, stats: PartitionStats) -> Batch:
    """The last sample stage: the documents' tokens, EOS after each (BOS
    before each with ``--bos``)."""
    options = ctx.options
    tok, safe = get_tokenizer(options.tokenizer_model)
    batch.encoded = encode_documents(
        batch.documents or [],
        tok,
        ctx.eos,
        ctx.dtype,
        options.encode_batch_chars,
        options.encode_chunk_chars if safe else None,
        ctx.bos,
    )
    return batch
