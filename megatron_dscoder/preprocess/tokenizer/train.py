"""Training DeepSeek-Coder's tokenizer: byte-level BPE with its pre-tokenizer and special tokens.

The model is a byte-level BPE trained with Hugging Face ``tokenizers`` (DeepSeek-Coder §3.2:
32,000 BPE tokens by default), behind DeepSeek-Coder's pre-tokenizer (newlines alone, letters
and punctuation runs with one optional leading space, CJK runs, every digit on its own; see
:data:`megatron_dscoder.tokenizer.PRE_TOKENIZER_SPLITS`). The structure is that of
DeepSeek-Coder's published ``tokenizer.json`` where that is not a defect:

- ``vocab_size`` (32,000) BPE ids, then the nine DeepSeek strings as added tokens in DeepSeek's
  order (BOS, EOS, fim hole/begin/end, pad, User, Assistant, EOT) with DeepSeek's flags: only
  BOS and EOS are special;
- merges saved as ``"a b"`` strings (readable by older ``tokenizers``; byte-level tokens never
  contain a space).

Deliberate differences: (1) all 256 bytes are in the BPE alphabet, where DeepSeek's BPE lacks
the 13 byte values that never occur in UTF-8 and adds them as 13 single Latin-1 characters
(ids 32000-32012), which makes text such as "ö" encode to an added token that decodes to
"\ufffd"; so our nine strings have ids 32000-32008, not 32013-32021 (everything finds them by
string). (2) The post-processor is a ``TemplateProcessing`` that prepends BOS when asked to add
special tokens, so raw ``tokenizers`` and ``transformers`` agree (DeepSeek's ``ByteLevel``
post-processor adds nothing; transformers adds BOS from its ``add_bos_token``). (3) No
normalizer at all instead of an empty ``Sequence`` (the same behaviour). The data pipeline uses
neither post-processor: BOS is its own ``--bos`` choice.

``--layout deepseek-llm`` writes DeepSeek-LLM's structure instead, the tokenizer of
DeepSeek-Coder-v1.5: 100,000 BPE ids by default, then only BOS and EOS (ids 100000 and 100001,
as its config's ``bos_token_id``/``eos_token_id``), no FIM sentinels and no pad token. The
pre-tokenizer stays DeepSeek-Coder's (DeepSeek-LLM's own split rules are not reproduced).

The saved directory (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) loads offline with ``transformers.AutoTokenizer`` and with
:func:`megatron_dscoder.tokenizer.load_tokenizer`. Training text is read with the data
pipeline's own readers (JSONL/Parquet/checkouts) and filters.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from megatron_dscoder.errors import UserError
from megatron_dscoder.preprocess.inputs.readers import FieldNames, read_chunk
from megatron_dscoder.preprocess.inputs.sources import iter_chunks
from megatron_dscoder.preprocess.stages.filters import filter_records
from megatron_dscoder.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    deepseek_pre_tokenizer,
)

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 32000
MIN_VOCAB_SIZE = 300
#: Added tokens per layout: DeepSeek-Coder's nine strings; DeepSeek-LLM's (DeepSeek-Coder-v1.5's)
#: BOS and EOS only, after 100,000 BPE ids (no FIM sentinels: v1.5 is next-token only).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "deepseek-coder": SPECIAL_TOKENS,
    "deepseek-llm": (BOS, EOS),
}
LAYOUT_VOCAB_SIZE = {"deepseek-coder": DEFAULT_VOCAB_SIZE, "deepseek-llm": 100000}
#: The added tokens DeepSeek-Coder's published tokenizer flags special.
SPECIAL_FLAGGED = frozenset({BOS, EOS})
MODEL_MAX_LENGTH = 16384


class TrainingText:
    """The texts of the corpus (filtered like the data pipeline), up to ``max_chars``
    characters; iterate once. What was read and skipped is counted, so an input with no usable
    text is refused (:meth:`check_some_read`) instead of giving a tokenizer without merges."""

    def __init__(
        self,
        inputs: list[str],
        max_chars: int,
        fields: FieldNames | None = None,
        max_record_bytes: int = 16 << 20,
        apply_filters: bool = True,
    ) -> None:
        self.inputs = inputs
        self.max_chars = max_chars
        self.fields = fields or FieldNames()
        self.max_record_bytes = max_record_bytes
        self.apply_filters = apply_filters
        self.texts = 0
        self.chars = 0
        self.bad: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # files of checkouts in no known language

    def __iter__(self) -> Iterator[str]:
        for task in iter_chunks(
            self.inputs, 4 << 20, self.max_record_bytes, self.bad, self.skipped
        ):
            records = read_chunk(task, self.fields, self.max_record_bytes, self.bad)
            if self.apply_filters:
                records = filter_records(records, self.dropped)
            for record in records:
                yield record.text
                self.texts += 1
                self.chars += len(record.text)
                if self.chars >= self.max_chars:
                    logger.info("tokenizer training text capped at %d characters", self.chars)
                    return
        if self.bad or self.dropped:
            logger.info(
                "tokenizer training skipped bad input %s and filtered %s",
                dict(self.bad),
                dict(self.dropped),
            )

    def check_some_read(self) -> None:
        """Raise :class:`NoTrainingText` when no text was read."""
        if self.texts:
            return
        filtered = {f"filtered_{k}": n for k, n in self.dropped.items()}
        skipped = {**self.bad, **self.skipped, **filtered}
        why = ", ".join(f"{k} {n}" for k, n in sorted(skipped.items())) or "no files found"
        hint = "; --no-filters keeps filtered files" if self.dropped else ""
        raise NoTrainingText(f"no training text in --input {' '.join(self.inputs)} ({why}){hint}")


class NoTrainingText(UserError, ValueError):
    """The inputs held no text to train on; the message names them and what was skipped."""


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with DeepSeek-Coder's pre-tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = deepseek_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    show_progress: bool = False,
    layout: str = "deepseek-coder",
) -> Tokenizer:
    """Train the BPE on ``texts`` (``vocab_size`` BPE tokens) and append the ``layout``'s
    added tokens (:data:`LAYOUTS`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + merges)"
        )
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(
        [AddedToken(s, special=s in SPECIAL_FLAGGED, normalized=False) for s in LAYOUTS[layout]]
    )
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 $B:1", special_tokens=[(BOS, bos)]
    )
    return tok


def with_string_merges(tokenizer_json: str) -> str:
    """``tokenizer.json`` text with BPE merges as ``"a b"`` strings, as DeepSeek's (older
    ``tokenizers`` cannot read the ``["a", "b"]`` pairs that 0.20+ writes)."""
    state = json.loads(tokenizer_json)
    merges = state["model"]["merges"]
    if any(" " in part for merge in merges if isinstance(merge, list) for part in merge):
        raise ValueError("a merge contains a space: it cannot be saved as an 'a b' string")
    state["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
    return json.dumps(state, ensure_ascii=False, indent=2)


def save_tokenizer_dir(tok: Tokenizer, output_dir: str | Path) -> Path:
    """Write an HF tokenizer directory loadable offline by ``AutoTokenizer``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _replace(out / "tokenizer.json", with_string_merges(tok.to_str()))
    special_map = {"bos_token": BOS, "eos_token": EOS}
    if tok.token_to_id(PAD) is not None:
        special_map["pad_token"] = PAD
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
    }
    for name, content in (
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special_map),
    ):
        _replace(out / name, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    return out


def _replace(path: Path, text: str) -> None:
    """Write ``path`` under a temporary name, then rename: never a half-written file."""
    temp = path.with_name(f".{path.name}.partial")
    try:
        temp.write_text(text, "utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
