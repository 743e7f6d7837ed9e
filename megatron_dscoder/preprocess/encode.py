"""Batched tokenisation of documents into flat token arrays (no per-token Python loops).

Each document is a list of pieces (text to encode, or a literal token id such as a FIM
sentinel); EOS is appended to every document. The text of a partition goes through
``Tokenizer.encode_batch_fast`` in batches of about ``batch_chars`` characters, whatever the
document sizes (large enough for the tokenizer's thread pool, small enough to bound the memory
of its ``Encoding`` objects), and each chunk's ids become a numpy array straight away.

Text is encoded by :func:`text_tokenizer`, a copy of the tokenizer whose added tokens are all
flagged special and skipped (``encode_special_tokens = True``), so that source code containing
the literal text of *any* added token (``<pad>``, ``<|EOT|>``, a FIM sentinel, or one of the 13
Latin-1 characters DeepSeek-Coder's tokenizer adds as non-special tokens) is encoded by the BPE
model as ordinary text: the only control ids in the output are those the pipeline inserts (FIM
sentinels, EOS, and BOS when chosen). On text without such literals the ids equal the original
tokenizer's (``transformers`` included); decoding with the original tokenizer returns the text.

Long texts (a repository sample can be many MB) are cut into chunks of about ``chunk_chars``
right after a newline, when the tokenizer's pre-tokenizer isolates every newline (DeepSeek-Coder's
does: ``[\r\n]`` is its first split rule; :func:`newline_safe` checks it). The tokens are then
exactly those of the whole text, while the tokenizer's per-text memory stays small and its
thread pool gets many pieces to share instead of one huge one. With such a tokenizer, each
distinct line of a batch is encoded once (:mod:`.line_encode`): about a fifth of the lines of
real code repeat within a batch, and their tokens are copied instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from megatron_dscoder.preprocess.fim import Piece
from megatron_dscoder.preprocess.line_encode import LineCut, encode_lines, line_cut
from megatron_dscoder.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from megatron_dscoder.preprocess.stages import Batch, StageConfig
    from megatron_dscoder.preprocess.stats import PartitionStats

#: Characters per ``encode_batch_fast`` call, and per chunk of a long text (newline-safe
#: tokenizers only); see the module docstring.
BATCH_CHARS = 1 << 20
CHUNK_CHARS = 16384


@dataclass
class EncodedPartition:
    """The tokens of consecutive documents (concatenated) and their lengths."""

    tokens: np.ndarray
    lengths: np.ndarray

    @staticmethod
    def empty(dtype: npt.DTypeLike) -> EncodedPartition:
        return EncodedPartition(np.empty(0, dtype=dtype), np.empty(0, dtype=np.int32))


_PROBE = "x = 1\n\n\tdef f():\n  \n    return 2\r\n// a\u00e9\n\n\n"


def text_tokenizer(tok: Tokenizer) -> Tokenizer:
    """A copy of ``tok`` that encodes every added token's literal text as ordinary text.

    All added tokens are flagged special in the copy and ``encode_special_tokens`` is set, so
    the added-vocabulary matcher skips them all and the whole text goes through the normalizer,
    pre-tokenizer and BPE model. Whatever flags the original uses (DeepSeek-Coder's flags only
    BOS and EOS special), the copy never emits an added token's id for text.
    """
    state = json.loads(tok.to_str())
    for token in state.get("added_tokens") or ():
        token["special"] = True
    copy = Tokenizer.from_str(json.dumps(state))
    copy.encode_special_tokens = True
    return copy


def _identity_normalizer(state: dict[str, Any] | None) -> bool:
    """True for no normalizer or a ``Sequence`` of identity normalizers (e.g. an empty one)."""
    if state is None:
        return True
    return state.get("type") == "Sequence" and all(
        _identity_normalizer(n) for n in state.get("normalizers", ())
    )


def newline_safe(tok: Tokenizer) -> bool:
    """True when cutting a text right after any newline cannot change its tokens.

    That holds when the normalizer is absent or an identity (DeepSeek-Coder's is an empty
    ``Sequence``), every CR and LF is a pre-token of its own, and no added token that encoding
    can match contains a newline.
    """
    if tok.pre_tokenizer is None:
        return False
    if tok.normalizer is not None and not _identity_normalizer(
        json.loads(tok.normalizer.__getstate__())
    ):
        return False
    matched = (
        t.content
        for t in tok.get_added_tokens_decoder().values()
        if not (t.special and tok.encode_special_tokens)
    )
    if any("\n" in text or "\r" in text for text in matched):
        return False
    spans = {offsets for _, offsets in tok.pre_tokenizer.pre_tokenize_str(_PROBE)}
    return all((i, i + 1) in spans for i, c in enumerate(_PROBE) if c in "\r\n")


def newline_cuts(text: str, chunk_chars: int | None) -> list[int]:
    """End offsets of the chunks of ``text``: cut right after a newline once a chunk has at least
    ``chunk_chars`` characters (None: one chunk)."""
    if chunk_chars is None or len(text) <= chunk_chars:
        return [len(text)]
    cuts = []
    start = 0
    while len(text) - start > chunk_chars:
        cut = text.find("\n", start + chunk_chars) + 1
        if cut == 0:
            break
        cuts.append(cut)
        start = cut
    if start < len(text):
        cuts.append(len(text))
    return cuts


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

    ``tok`` should be a :func:`text_tokenizer`.

    Text is sent to the tokenizer in batches of about ``batch_chars`` characters whatever the
    document sizes (a document of many MB spans several batches), and every chunk's ids become
    a numpy array at once, so memory stays near the size of the output tokens.
    ``chunk_chars`` must only be set for a :func:`newline_safe` tokenizer (None: no chunking).
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


_TOKENIZERS: dict[str, tuple[Tokenizer, bool]] = {}


def get_tokenizer(path: str) -> tuple[Tokenizer, bool]:
    """The process-wide :func:`text_tokenizer` for ``path`` (loaded once per worker) and its
    newline safety."""
    if path not in _TOKENIZERS:
        tok = text_tokenizer(load_tokenizer(path))
        _TOKENIZERS[path] = (tok, newline_safe(tok))
    return _TOKENIZERS[path]


def tokenize_stage(batch: Batch, config: StageConfig, stats: PartitionStats) -> Batch:
    """The last sample stage (see :mod:`.options`): the documents' tokens, EOS after each (BOS
    before each with ``--bos``)."""
    options = config.options
    tok, safe = get_tokenizer(options.tokenizer_model)
    batch.encoded = encode_documents(
        batch.documents or [], tok, config.eos, config.dtype, options.encode_batch_chars,
        options.encode_chunk_chars if safe else None, config.bos,
    )  # fmt: skip
    return batch
