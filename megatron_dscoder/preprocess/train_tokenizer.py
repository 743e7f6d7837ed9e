"""Training DeepSeek-Coder's tokenizer: byte-level BPE with its pre-tokenizer and special tokens.

The model is a byte-level BPE trained with Hugging Face ``tokenizers`` (DeepSeek-Coder §3.2:
32,000 BPE tokens by default), behind DeepSeek-Coder's pre-tokenizer (newlines alone, letters
and punctuation runs with one optional leading space, CJK runs, every digit on its own; see
:data:`megatron_dscoder.tokenizer.PRE_TOKENIZER_SPLITS`). The nine special tokens follow the
BPE vocabulary, in DeepSeek's order (BOS, EOS, fim hole/begin/end, pad, User, Assistant, EOT),
as in the published tokenizer. Like DeepSeek's, the tokenizer prepends BOS when asked to add
special tokens; the data pipeline never asks and writes EOS-terminated documents only.

The saved directory (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) loads offline with ``transformers.AutoTokenizer`` and with
:func:`megatron_dscoder.tokenizer.load_tokenizer`. Training text is read with the data
pipeline's own readers (JSONL/Parquet/checkouts) and filters.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from megatron_dscoder.preprocess.filters import filter_records
from megatron_dscoder.preprocess.readers import FieldNames, read_task
from megatron_dscoder.preprocess.sources import iter_tasks
from megatron_dscoder.tokenizer import (
    ASSISTANT,
    BOS,
    EOS,
    EOT,
    FIM_BEGIN,
    FIM_END,
    FIM_HOLE,
    PAD,
    SPECIAL_TOKENS,
    USER,
    deepseek_pre_tokenizer,
)

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 32000
MODEL_MAX_LENGTH = 16384


def iter_training_texts(
    inputs: list[str],
    max_bytes: int,
    fields: FieldNames | None = None,
    max_record_bytes: int = 16 << 20,
    apply_filters: bool = True,
) -> Iterator[str]:
    """Texts of the corpus (filtered like the data pipeline), stopping after ``max_bytes``."""
    fields = fields or FieldNames()
    bad: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    seen = 0
    for task in iter_tasks(inputs, 4 << 20, max_record_bytes, bad):
        records = read_task(task, fields, max_record_bytes, bad)
        if apply_filters:
            records = filter_records(records, dropped)
        for record in records:
            yield record.text
            seen += len(record.text)
            if seen >= max_bytes:
                logger.info("tokenizer training text capped at %d characters", seen)
                return
    if bad or dropped:
        logger.info(
            "tokenizer training skipped bad input %s and filtered %s", dict(bad), dict(dropped)
        )


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with DeepSeek-Coder's pre-tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = deepseek_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, show_progress: bool = False
) -> Tokenizer:
    """Train the BPE on ``texts`` (``vocab_size`` BPE tokens) and append the special tokens."""
    if vocab_size < 300:
        raise ValueError("--vocab-size must be at least 300 (256 byte tokens + merges)")
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False, single_word=False) for s in SPECIAL_TOKENS]
    )
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 $B:1", special_tokens=[(BOS, bos)]
    )
    return tok


def save_tokenizer_dir(tok: Tokenizer, output_dir: str | Path) -> Path:
    """Write an HF tokenizer directory loadable offline by ``AutoTokenizer``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    extra = [FIM_HOLE, FIM_BEGIN, FIM_END, USER, ASSISTANT, EOT]
    special_map = {
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "additional_special_tokens": extra,
    }
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
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return out
