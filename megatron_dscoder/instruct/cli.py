"""Instruction data -> ``PREFIX.bin/.idx`` (token ids) + ``PREFIX_mask.bin/.idx`` (loss masks).

Inputs are Alpaca records (``instruction``, optional ``input``, ``output``) or chat records
(``messages``: ``[{"role": "system"|"user"|"assistant", "content": ...}]``), as a JSON array or
JSON Lines, in any mix. Each is rendered with DeepSeek-Coder-Instruct's template and becomes one
document; the mask marks the response tokens and ``<|EOT|>`` (see
:mod:`megatron_dscoder.instruct.encode`). Bad records are skipped and counted in ``--stats-json``.
Run as ``dscoder-preprocess-sft`` or ``python tools/preprocess_sft.py``::

    python tools/preprocess_sft.py --input data/alpaca.json data/chat.jsonl \\
        --tokenizer-model out/tokenizer --output-prefix data/sft --stats-json data/sft.json

Then train with ``--stage sft --data-path data/sft --load BASE_CHECKPOINT``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path

from tokenizers import Tokenizer

from megatron_dscoder.config.flags import OneLineParser, add_flags, opt, values_from_args
from megatron_dscoder.data.prefix import check_output_prefix
from megatron_dscoder.errors import UserError, run_cli
from megatron_dscoder.instruct.encode import SFTStats, read_records, write_sft
from megatron_dscoder.tokenizer import load_tokenizer


@dataclass(frozen=True, kw_only=True)
class SFTPreprocessConfig:
    """Options of ``dscoder-preprocess-sft``; each field is its flag."""

    inputs: tuple[str, ...] = opt(
        MISSING,
        "Alpaca/chat records: JSON array or JSON Lines files",
        flag="--input",
        metavar="PATH",
        required=True,
    )
    tokenizer_model: str = opt(MISSING, "HF tokenizer directory", metavar="DIR", required=True)
    output_prefix: str = opt(
        MISSING, "writes PREFIX.bin/.idx and PREFIX_mask.bin/.idx", metavar="PREFIX", required=True
    )
    stats_json: str | None = opt(None, "write record/token counts and skip reasons here")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dscoder-preprocess-sft",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, SFTPreprocessConfig)
    return parser


def prepare(argv: Sequence[str] | None) -> tuple[SFTPreprocessConfig, Tokenizer]:
    """The options, the inputs and the tokenizer, checked before any work."""
    args = build_parser().parse_args(argv)
    config = SFTPreprocessConfig(**values_from_args(SFTPreprocessConfig, args))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [p for p in config.inputs if not Path(p).is_file()]
    if missing:
        raise UserError(f"no such input file: {', '.join(missing)}")
    check_output_prefix(config.output_prefix)
    return config, load_tokenizer(config.tokenizer_model)


def work(plan: tuple[SFTPreprocessConfig, Tokenizer]) -> int:
    """Encode the records; their counts on stdout (and in ``--stats-json``)."""
    config, tok = plan
    stats = SFTStats()
    write_sft(read_records(config.inputs, stats), tok, config.output_prefix, stats)
    summary = stats.as_dict()
    if config.stats_json:
        Path(config.stats_json).write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(f"{json.dumps(summary)}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the records; the exit status of :func:`megatron_dscoder.errors.run_cli`."""
    return run_cli(lambda: prepare(argv), work, user_errors=(OSError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
