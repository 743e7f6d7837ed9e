"""Train DeepSeek-Coder's tokenizer (byte-level BPE + its pre-tokenizer + special tokens).

Writes an HF tokenizer directory (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) that ``transformers.AutoTokenizer`` loads offline and that
``tools/preprocess_data.py --tokenizer-model DIR`` uses. Input: JSONL (plain/.gz/.zst),
Parquet, or a directory of repository checkouts, as for the data pipeline.

Tiny CPU toy run (a few seconds), from the repository root::

    STDLIB=$(python -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])')
    python tools/train_tokenizer.py --input "$STDLIB/json" --output out/tok-toy --vocab-size 2000

Full size (DeepSeek-Coder: 32,000 BPE tokens + 9 special tokens)::

    python tools/train_tokenizer.py --input data/*.jsonl.zst --output out/tokenizer
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

try:
    import megatron_dscoder  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_dscoder.preprocess.readers import FieldNames
from megatron_dscoder.preprocess.train_tokenizer import (
    DEFAULT_VOCAB_SIZE,
    iter_training_texts,
    save_tokenizer_dir,
    train_tokenizer,
)
from megatron_dscoder.tokenizer import vocab_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="JSONL(.gz/.zst), Parquet files, or directories of repository checkouts",
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="tokenizer directory to write"
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        help="BPE vocabulary size, special tokens excluded (default: %(default)s)",
    )
    parser.add_argument(
        "--max-chars",
        type=float,
        default=1e9,
        help="stop reading training text after this many characters (default: 1e9)",
    )
    parser.add_argument("--text-field", default=None, help="JSONL/Parquet field holding the text")
    parser.add_argument("--no-filters", action="store_true", help="train on unfiltered files")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    texts = iter_training_texts(
        args.input,
        max_bytes=int(args.max_chars),
        fields=FieldNames().with_preferred(text=args.text_field),
        apply_filters=not args.no_filters,
    )
    tok = train_tokenizer(texts, vocab_size=args.vocab_size, show_progress=sys.stderr.isatty())
    out = save_tokenizer_dir(tok, args.output)
    print(f"wrote {out} ({vocab_size(tok)} tokens) in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
