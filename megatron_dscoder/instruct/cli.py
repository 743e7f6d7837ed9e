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
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path

from tokenizers import Tokenizer

from megatron_dscoder.config.flags import (
    ConfigError,
    OneLineParser,
    add_flags,
    opt,
    require_positive,
    values_from_args,
)
from megatron_dscoder.config.inputs import InputError
from megatron_dscoder.data.indexed import mask_prefix
from megatron_dscoder.data.prefix import check_output_prefix
from megatron_dscoder.errors import run_cli
from megatron_dscoder.instruct.encode import NoRecordsError, write_sft
from megatron_dscoder.instruct.read import SFTStats, read_records
from megatron_dscoder.paths import check_output_path
from megatron_dscoder.tokenizer import load_tokenizer

MIB = 1 << 20
#: File signatures of inputs this tool cannot read, and what to do about them.
UNREADABLE_SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed; decompress it first"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed; decompress it first"),
    (b"\xff\xfe", "UTF-16 or UTF-32 text (byte order mark ff fe); re-encode it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text (byte order mark fe ff); re-encode it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 text; re-encode it as UTF-8"),
)


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
    max_record_mb: float = opt(
        16.0,
        "skip records (JSON lines or array elements) larger than this, without loading them "
        "(default: %(default)s)",
    )

    def __post_init__(self) -> None:
        require_positive(self, "max_record_mb")

    @property
    def max_record_bytes(self) -> int:
        return max(1, min(int(self.max_record_mb * MIB), sys.maxsize // 2))


def check_input(path: str) -> None:
    """Refuse, before any work, an input that is missing, not a regular file (a FIFO would
    block), unreadable, or in a form no record of which could be read (compressed, UTF-16)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise InputError(f"--input {path}: {(err.strerror or str(err)).lower()}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"--input {path}: a directory; give JSON or JSON Lines files")
    if not stat.S_ISREG(mode):
        raise InputError(f"--input {path}: not a regular file (a FIFO, socket or device)")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise InputError(f"--input {path}: {(err.strerror or str(err)).lower()}") from None
    for signature, problem in UNREADABLE_SIGNATURES:
        if head.startswith(signature):
            raise InputError(f"--input {path}: {problem}")


def check_stats_json(config: SFTPreprocessConfig) -> None:
    """``--stats-json`` must be writable and must not replace an input or an output."""
    if not config.stats_json:
        return
    check_output_path(config.stats_json, "--stats-json", directory=False)
    target = os.path.abspath(config.stats_json)
    outputs = [
        f"{p}{suffix}"
        for p in (config.output_prefix, mask_prefix(config.output_prefix))
        for suffix in (".bin", ".idx")
    ]
    for path in (*config.inputs, *outputs):
        if os.path.abspath(path) == target or (
            os.path.exists(path) and os.path.exists(target) and os.path.samefile(path, target)
        ):
            raise ConfigError(f"--stats-json {config.stats_json} would overwrite {path}")


def write_stats(path: str, summary: dict[str, object]) -> None:
    """The stats JSON, under a temporary name until complete."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".stats.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dscoder-preprocess-sft",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, SFTPreprocessConfig)
    return parser


def prepare(argv: Sequence[str] | None) -> tuple[SFTPreprocessConfig, Tokenizer]:
    """The options, the inputs, the outputs and the tokenizer, checked before any work."""
    args = build_parser().parse_args(argv)
    config = SFTPreprocessConfig(**values_from_args(SFTPreprocessConfig, args))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for path in config.inputs:
        check_input(path)
    check_output_prefix(config.output_prefix)
    check_output_prefix(mask_prefix(config.output_prefix))
    check_stats_json(config)
    return config, load_tokenizer(config.tokenizer_model)


def work(plan: tuple[SFTPreprocessConfig, Tokenizer]) -> int:
    """Encode the records; their counts on stdout (and in ``--stats-json``, also when no
    record could be used: the skips say why)."""
    config, tok = plan
    stats = SFTStats()
    records = read_records(config.inputs, stats, config.max_record_bytes)
    try:
        write_sft(records, tok, config.output_prefix, stats)
    except NoRecordsError:
        if config.stats_json:
            write_stats(config.stats_json, stats.as_dict())
        raise
    summary = stats.as_dict()
    if config.stats_json:
        write_stats(config.stats_json, summary)
    del summary["skipped_by_file"]  # in the stats JSON; the warnings name the files
    sys.stdout.write(f"{json.dumps(summary)}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the records; the exit status of :func:`megatron_dscoder.errors.run_cli`."""
    return run_cli(lambda: prepare(argv), work, user_errors=(OSError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
