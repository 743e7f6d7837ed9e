"""Train DeepSeek-Coder's tokenizer (byte-level BPE + its pre-tokenizer + special tokens).

Writes an HF tokenizer directory (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) that ``transformers.AutoTokenizer`` loads offline and that
``dscoder-preprocess --tokenizer-model DIR`` uses. Input: JSONL (plain/.gz/.zst), Parquet, or a
directory of repository checkouts, as for the data pipeline. Run as ``dscoder-train-tokenizer``
(installed with the package) or ``python tools/train_tokenizer.py``; the flags are generated
from :class:`TokenizerTrainingConfig`.

Tiny CPU toy run (a few seconds), from the repository root::

    STDLIB=$(python -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])')
    python tools/train_tokenizer.py --input "$STDLIB/json" --output out/tok-toy --vocab-size 2000

Full size (DeepSeek-Coder: 32,000 BPE tokens + 9 special tokens; DeepSeek-Coder-v1.5, i.e.
DeepSeek-LLM's structure: 100,000 BPE tokens + BOS and EOS)::

    python tools/train_tokenizer.py --input data/*.jsonl.zst --output out/tokenizer
    python tools/train_tokenizer.py --input data/*.jsonl.zst --output out/tok-v15 \
        --layout deepseek-llm
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, dataclass

from megatron_dscoder.config.flags import (
    ConfigError,
    OneLineParser,
    add_flags,
    check_choices,
    opt,
    require_positive,
    values_from_args,
)
from megatron_dscoder.errors import run_cli
from megatron_dscoder.paths import check_output_path
from megatron_dscoder.preprocess.inputs.readers import FieldNames
from megatron_dscoder.preprocess.inputs.sources import check_inputs
from megatron_dscoder.preprocess.tokenizer.train import (
    LAYOUT_VOCAB_SIZE,
    LAYOUTS,
    MIN_VOCAB_SIZE,
    NoTrainingText,
    TrainingText,
    save_tokenizer_dir,
    train_tokenizer,
)
from megatron_dscoder.tokenizer import vocab_size

logger = logging.getLogger(__name__)
#: The byte-level alphabet: a BPE with no more tokens than this has no merge.
BYTE_TOKENS = 256
#: 2**22: the trainer reserves about 70 bytes per token asked for, whatever the corpus
#: (``--vocab-size 1e9`` aborts on a 70 GB allocation); real vocabularies are far smaller.
MAX_VOCAB_SIZE = 1 << 22


@dataclass(frozen=True, kw_only=True)
class TokenizerTrainingConfig:
    """Options of ``dscoder-train-tokenizer``; each field is its flag."""

    inputs: tuple[str, ...] = opt(
        MISSING,
        "JSONL(.gz/.zst), Parquet files, or directories of repository checkouts",
        flag="--input",
        metavar="PATH",
        required=True,
    )
    output: str = opt(MISSING, "tokenizer directory to write", metavar="DIR", required=True)
    vocab_size: int | None = opt(
        None, "BPE vocabulary size, special tokens excluded (default: 32000; deepseek-llm: 100000)"
    )
    layout: str = opt(
        "deepseek-coder",
        "added tokens: deepseek-coder (its 9 special tokens) or deepseek-llm "
        "(DeepSeek-Coder-v1.5's: BOS and EOS only, no FIM sentinels) (default: %(default)s)",
        choices=tuple(LAYOUTS),
    )
    max_chars: float = opt(
        1e9, "stop reading training text after this many characters (default: %(default)s)"
    )
    text_field: str | None = opt(None, "JSONL/Parquet field holding the text")
    apply_filters: bool = opt(True, "train on unfiltered files", flag="--no-filters")

    def __post_init__(self) -> None:
        require_positive(self, "vocab_size", "max_chars")
        if self.vocab_size is not None and self.vocab_size < MIN_VOCAB_SIZE:
            raise ConfigError(
                f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + merges), "
                f"got {self.vocab_size}"
            )
        if self.vocab_size is not None and self.vocab_size > MAX_VOCAB_SIZE:
            raise ConfigError(
                f"--vocab-size must be at most {MAX_VOCAB_SIZE} (the trainer reserves memory "
                f"for every token asked for), got {self.vocab_size}"
            )
        if self.max_chars < 1:
            raise ConfigError(f"--max-chars must be at least 1, got {self.max_chars}")
        check_choices(self)

    @property
    def fields(self) -> FieldNames:
        return FieldNames().with_preferred(text=self.text_field)

    @property
    def bpe_vocab_size(self) -> int:
        return self.vocab_size or LAYOUT_VOCAB_SIZE[self.layout]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dscoder-train-tokenizer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, TokenizerTrainingConfig)
    return parser


def prepare(argv: Sequence[str] | None) -> TokenizerTrainingConfig:
    """The options, the inputs and the output, checked before any work (exit 2)."""
    args = build_parser().parse_args(argv)
    config = TokenizerTrainingConfig(**values_from_args(TokenizerTrainingConfig, args))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_inputs(list(config.inputs), config.fields.text)
    check_output_path(config.output, "--output", directory=True)
    return config


def work(config: TokenizerTrainingConfig) -> int:
    """Train and write the tokenizer directory."""
    start = time.perf_counter()
    texts = TrainingText(
        list(config.inputs),
        max_chars=int(config.max_chars),
        fields=config.fields,
        apply_filters=config.apply_filters,
    )
    tok = train_tokenizer(
        texts,
        vocab_size=config.bpe_vocab_size,
        show_progress=sys.stderr.isatty(),
        layout=config.layout,
    )
    texts.check_some_read()
    learned = tok.get_vocab_size(with_added_tokens=False)
    if learned <= BYTE_TOKENS:
        raise NoTrainingText(
            f"no BPE merge learned: the training text ({texts.chars} characters in --input "
            f"{' '.join(config.inputs)}) has no pair of symbols seen twice"
        )
    if learned < config.bpe_vocab_size:
        logger.warning(
            "learned %d BPE tokens of the %d asked for: the training text (%d characters) "
            "has no more pairs seen twice",
            learned,
            config.bpe_vocab_size,
            texts.chars,
        )
    out = save_tokenizer_dir(tok, config.output)
    seconds = time.perf_counter() - start
    sys.stdout.write(f"wrote {out} ({vocab_size(tok)} tokens) in {seconds:.1f}s\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train and write the tokenizer directory; the exit status of
    :func:`megatron_dscoder.errors.run_cli`."""
    return run_cli(lambda: prepare(argv), work, user_errors=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    raise SystemExit(main())
