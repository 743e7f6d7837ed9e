"""Instruction data -> token ids and a per-token loss mask, in Megatron's indexed format.

Each record (an Alpaca object with ``instruction``, optional ``input``, ``output``; or a chat
object with ``messages``) is rendered with DeepSeek-Coder-Instruct's template
(:mod:`.template`) and becomes one document of two MMIDIDX datasets with equal lengths:

    PREFIX.bin/.idx        token ids (uint16 or int32, Megatron's rule)
    PREFIX_mask.bin/.idx   uint8, 1 where the token is a training target (response text, the
                           newline after it, <|EOT|>), 0 elsewhere

The mask is aligned with the tokens: token ``t`` is learned (as the label of position ``t-1``)
exactly when ``mask[t]`` is 1. Text is encoded with :func:`.encode.text_tokenizer`, so a literal
``<|EOT|>`` in a user's text stays text; only the template inserts control ids. Records are
processed in input order (deterministic). A record that cannot be read is counted by
:mod:`.read`; one the template refuses is skipped and counted by reason: ``not_an_object``,
``unknown_format`` (neither ``messages`` nor ``instruction``/``output``: e.g. a file that wraps
its records in an object), ``bad_alpaca``, ``bad_messages``, ``no_response``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import pairwise

import numpy as np
from tokenizers import Tokenizer

from megatron_dscoder.data.indexed import IndexedDatasetWriter, mask_prefix, token_dtype
from megatron_dscoder.errors import UserError
from megatron_dscoder.instruct.read import SFTStats, Sourced
from megatron_dscoder.instruct.template import TemplateError, TemplatePiece, messages_of, render
from megatron_dscoder.tokenizer import newline_cuts, newline_safe, text_tokenizer, vocab_size

#: Characters per tokenizer call, and per piece of a long text: as the pretraining pipeline's.
BATCH_CHARS = 1 << 20
CHUNK_CHARS = 16384


def text_runs(pieces: list[TemplatePiece]) -> list[TemplatePiece]:
    """``pieces`` with each run of consecutive text pieces of equal ``loss`` joined into one.

    transformers encodes the rendered text between control tokens as one string, so a system
    message that does not end in a newline (``"Be terse "``) merges with the next turn's
    ``###``: encoding pieces apart would give ``Ġ``, ``###`` where it gives ``Ġ#``, ``##``.
    A loss boundary always follows a newline (``### Response:\n`` before a response, the
    response's own ``\n`` before ``<|EOT|>``), which DeepSeek's pre-tokenizer isolates, so
    splitting there changes no id."""
    runs: list[TemplatePiece] = []
    for p in pieces:
        if runs and not p.control and not runs[-1].control and runs[-1].loss == p.loss:
            runs[-1] = TemplatePiece(runs[-1].text + p.text, loss=p.loss)
        else:
            runs.append(p)
    return runs


def _text_ids(texts: list[str], tok: Tokenizer, chunk_chars: int | None) -> Iterator[np.ndarray]:
    """The ids of each text; long ones cut right after newlines (``chunk_chars``, for a
    :func:`~megatron_dscoder.tokenizer.newline_safe` tokenizer only: the same ids) and sent in
    batches of about :data:`BATCH_CHARS`, so a record of many MB never has all its tokenizer
    ``Encoding`` objects alive at once."""
    cuts = [newline_cuts(text, chunk_chars) for text in texts]
    chunks = [t[a:b] for t, ends in zip(texts, cuts, strict=True) for a, b in pairwise([0, *ends])]
    encoded: list[np.ndarray] = []
    start = 0
    while start < len(chunks):
        stop, size = start, 0
        while stop < len(chunks) and (stop == start or size < BATCH_CHARS):
            size += len(chunks[stop])
            stop += 1
        batch = tok.encode_batch_fast(chunks[start:stop], add_special_tokens=False)
        encoded += [np.array(e.ids, dtype=np.int64) for e in batch]
        start = stop
    parts = iter(encoded)
    for ends in cuts:
        yield np.concatenate([next(parts) for _ in ends])


def encode_arrays(
    pieces: list[TemplatePiece],
    tok: Tokenizer,
    control_ids: dict[str, int],
    chunk_chars: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) of rendered pieces as arrays (int64 ids, uint8 mask); text through ``tok``
    (an added-tokens-as-text copy), run by run (:func:`text_runs`): the ids of
    ``apply_chat_template`` on the same messages."""
    runs = text_runs(pieces)
    encoded = _text_ids([p.text for p in runs if not p.control], tok, chunk_chars)
    ids, mask = [], []
    for p in runs:
        part = np.array([control_ids[p.text]]) if p.control else next(encoded)
        ids.append(part)
        mask.append(np.full(part.size, p.loss, dtype=np.uint8))
    return np.concatenate(ids), np.concatenate(mask)


def encode_pieces(
    pieces: list[TemplatePiece], tok: Tokenizer, control_ids: dict[str, int]
) -> tuple[list[int], list[int]]:
    """:func:`encode_arrays` as lists (prompts for generation and tests)."""
    ids, mask = encode_arrays(pieces, tok, control_ids)
    return ids.tolist(), mask.tolist()


class SFTEncoder:
    """Renders and encodes records with one tokenizer."""

    def __init__(self, tok: Tokenizer) -> None:
        self.text_tok = text_tokenizer(tok)
        self.vocab_size = vocab_size(tok)
        self.chunk_chars = CHUNK_CHARS if newline_safe(self.text_tok) else None
        self.control_ids: dict[str, int] = {}
        for p in render([{"role": "assistant", "content": "x"}]):
            if p.control:
                token_id = tok.token_to_id(p.text)
                if token_id is None:
                    raise TemplateError(f"the tokenizer lacks the template's token {p.text!r}")
                self.control_ids[p.text] = token_id

    def encode(self, record: object) -> tuple[np.ndarray, np.ndarray]:
        pieces = render(messages_of(record))
        return encode_arrays(pieces, self.text_tok, self.control_ids, self.chunk_chars)


class NoRecordsError(UserError, ValueError):
    """No input record could be used; the message names the files and why."""


def no_records_message(stats: SFTStats) -> str:
    """Why nothing was written: each file's skips (three at most), or that there was no input."""
    files = sorted(stats.skipped_by_file, key=lambda f: -sum(stats.skipped_by_file[f].values()))
    if not files:
        return "no record in the input"
    shown = "; ".join(f"{f}: {stats.file_summary(f)}" for f in files[:3])
    more = f"; and {len(files) - 3} more files" if len(files) > 3 else ""
    return f"no usable record in the input, {stats.records} skipped: {shown}{more}"


def write_sft(
    records: Iterable[object], tok: Tokenizer, prefix: str, stats: SFTStats | None = None
) -> SFTStats:
    """Encode ``records`` (JSON values, or :class:`~.read.Sourced` ones that name their file)
    into ``prefix`` and :func:`mask_prefix` (temporary names until complete); a record the
    template refuses is skipped and counted. No usable record at all is a
    :class:`NoRecordsError` (nothing is written)."""
    stats = stats if stats is not None else SFTStats()
    encoder = SFTEncoder(tok)
    with (
        IndexedDatasetWriter(prefix, token_dtype(encoder.vocab_size)) as tokens,
        IndexedDatasetWriter(mask_prefix(prefix), np.uint8) as masks,
    ):
        for record in records:
            source = record if isinstance(record, Sourced) else Sourced("", "", record)
            try:
                ids, mask = encoder.encode(source.value)
            except TemplateError as err:
                stats.skip(source.source, err.reason, f"{source.where}: {err}".lstrip(": "))
                continue
            stats.records += 1
            lengths = np.array([ids.size], dtype=np.int32)
            tokens.add(ids, lengths)
            masks.add(mask, lengths)
            stats.written += 1
            stats.tokens += ids.size
            stats.loss_tokens += int(mask.sum())
        if not stats.written:
            raise NoRecordsError(no_records_message(stats))
        tokens.finalize()
        masks.finalize()
    return stats
