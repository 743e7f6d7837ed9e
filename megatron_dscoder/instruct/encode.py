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

from collections.abc import Iterable

import numpy as np
from tokenizers import Tokenizer

from megatron_dscoder.data.indexed import IndexedDatasetWriter, mask_prefix, token_dtype
from megatron_dscoder.errors import UserError
from megatron_dscoder.instruct.read import SFTStats, Sourced
from megatron_dscoder.instruct.template import TemplateError, TemplatePiece, messages_of, render
from megatron_dscoder.tokenizer import text_tokenizer, vocab_size


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


def encode_pieces(
    pieces: list[TemplatePiece], tok: Tokenizer, control_ids: dict[str, int]
) -> tuple[list[int], list[int]]:
    """(ids, mask) of rendered pieces; text through ``tok`` (an added-tokens-as-text copy),
    run by run (:func:`text_runs`): the ids of ``apply_chat_template`` on the same messages."""
    ids: list[int] = []
    mask: list[int] = []
    runs = text_runs(pieces)
    texts = [p.text for p in runs if not p.control]
    encoded = iter(tok.encode_batch_fast(texts, add_special_tokens=False))
    for p in runs:
        part = [control_ids[p.text]] if p.control else next(encoded).ids
        ids += part
        mask += [int(p.loss)] * len(part)
    return ids, mask


class SFTEncoder:
    """Renders and encodes records with one tokenizer."""

    def __init__(self, tok: Tokenizer) -> None:
        self.text_tok = text_tokenizer(tok)
        self.vocab_size = vocab_size(tok)
        self.control_ids: dict[str, int] = {}
        for p in render([{"role": "assistant", "content": "x"}]):
            if p.control:
                token_id = tok.token_to_id(p.text)
                if token_id is None:
                    raise TemplateError(f"the tokenizer lacks the template's token {p.text!r}")
                self.control_ids[p.text] = token_id

    def encode(self, record: object) -> tuple[list[int], list[int]]:
        return encode_pieces(render(messages_of(record)), self.text_tok, self.control_ids)


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
            lengths = np.array([len(ids)], dtype=np.int32)
            tokens.add(np.array(ids), lengths)
            masks.add(np.array(mask), lengths)
            stats.written += 1
            stats.tokens += len(ids)
            stats.loss_tokens += sum(mask)
        if not stats.written:
            raise NoRecordsError(no_records_message(stats))
        tokens.finalize()
        masks.finalize()
    return stats
