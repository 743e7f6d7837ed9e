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
processed in input order (deterministic); a bad record (unparsable JSON, missing fields, bad
roles, no response) is skipped and counted by reason (``bad_json``, ``not_an_object``,
``bad_alpaca``, ``bad_messages``, ``no_response``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from megatron_dscoder.data.indexed import IndexedDatasetWriter, mask_prefix, token_dtype
from megatron_dscoder.instruct.template import TemplateError, TemplatePiece, messages_of, render
from megatron_dscoder.tokenizer import text_tokenizer, vocab_size


@dataclass
class SFTStats:
    """Counts for the stats JSON."""

    records: int = 0
    written: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "records": self.records,
            "written": self.written,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
        }


def read_records(paths: Iterable[str | Path], stats: SFTStats) -> Iterator[object]:
    """JSON objects of each file in order: a JSON array file, or JSON Lines."""
    for path in paths:
        text = Path(path).read_text("utf-8")
        if text.lstrip().startswith("["):
            try:
                yield from json.loads(text)
            except json.JSONDecodeError:
                stats.skipped["bad_json_file"] += 1
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                stats.records += 1
                stats.skipped["bad_json"] += 1


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


def write_sft(
    records: Iterable[object], tok: Tokenizer, prefix: str, stats: SFTStats | None = None
) -> SFTStats:
    """Encode ``records`` into ``prefix`` and :func:`mask_prefix` (temp names until complete)."""
    stats = stats if stats is not None else SFTStats()
    encoder = SFTEncoder(tok)
    with (
        IndexedDatasetWriter(prefix, token_dtype(encoder.vocab_size)) as tokens,
        IndexedDatasetWriter(mask_prefix(prefix), np.uint8) as masks,
    ):
        for record in records:
            stats.records += 1
            try:
                ids, mask = encoder.encode(record)
            except TemplateError as err:
                stats.skipped[err.reason] += 1
                continue
            lengths = np.array([len(ids)], dtype=np.int32)
            tokens.add(np.array(ids), lengths)
            masks.add(np.array(mask), lengths)
            stats.written += 1
            stats.tokens += len(ids)
            stats.loss_tokens += sum(mask)
        tokens.finalize()
        masks.finalize()
    return stats
