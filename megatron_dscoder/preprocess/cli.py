"""Turn a raw code corpus into Megatron indexed binaries (``PREFIX.bin`` + ``PREFIX.idx``).

DeepSeek-Coder's pipeline: the paper's file filters; quality screening (files that do not parse,
auto-generated files, files with a function over 1000 lines; see
``megatron_dscoder.preprocess.stages.quality``); repository-level samples for Python, Java,
C, C++ and C# (imports resolved inside each repository, files ordered by Algorithm 1, each
prefixed with a path comment, one sample per connected component); one sample per file for
other languages; document-level FIM (PSM; SPM with ``--fim-spm-rate``); EOS after every
document (and BOS before it only with ``--bos``: the tokenizer's own post-processor is never
used, so the layout is the same for any tokenizer). Source text containing the literal text of an
added token (``<pad>``, ``<|EOT|>``, a FIM sentinel ...) is encoded as plain text.
Corpus-wide, two stages are on by default: near-deduplication (MinHash over word 5-grams,
256 hashes, LSH bands, Jaccard >= 0.7 verified; repository samples of Python, Java, C, C++ and
C# as wholes, other files one by one; one sample kept per cluster) and benchmark
decontamination (a sample sharing a 10-word gram with HumanEval or a --decontaminate-files
benchmark is dropped). Inputs: JSONL (plain/.gz/.zst) or Parquet with fields
text/repo/path/lang (The Stack's content/max_stars_repo_name/max_stars_repo_path/lang are
recognised), or directories whose subdirectories are repository checkouts. Bad records are
skipped and counted in the stats.
Output is identical for any ``--workers`` and either ``--engine`` given the same input and
``--seed``.

Run as ``dscoder-preprocess`` (installed with the package) or ``python tools/preprocess_data.py``;
the flags are generated from :class:`~megatron_dscoder.preprocess.config.PreprocessConfig`. Tiny CPU
toy run, from the repository root (a tokenizer first, then the Python json package)::

    STDLIB=$(python -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])')
    python tools/train_tokenizer.py --input "$STDLIB/json" --output out/tok-toy --vocab-size 2000
    python tools/preprocess_data.py --input "$STDLIB/json" --tokenizer-model out/tok-toy \\
        --output-prefix out/toy/code --workers 2 --stats-json out/toy/stats.json

Then train with ``--data-path out/toy/code``. A real run::

    python tools/preprocess_data.py --input shards/*.jsonl.zst --tokenizer-model out/tokenizer \\
        --output-prefix data/code --workers 64 --fim-rate 0.5 --seed 1234 \\
        --stats-json data/code.json \\
        --decontaminate-files bench/mbpp.jsonl:text,code bench/ds1000.jsonl.gz:prompt

On a Ray cluster (every path on shared storage, this package installed on every node)::

    python tools/preprocess_data.py --engine ray --ray-address auto \\
        --input /shared/raw/*.jsonl.zst \\
        --tokenizer-model /shared/tokenizer --output-prefix /shared/data/code --keep-shards
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from megatron_dscoder.config.flags import OneLineParser, add_flags, values_from_args
from megatron_dscoder.data.indexed import NoSpaceError
from megatron_dscoder.errors import UserError, run_cli
from megatron_dscoder.paths import check_output_path
from megatron_dscoder.preprocess.cluster.engine import ClusterFailure, check_ray_address
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.pipeline import PreparedRun, execute, prepare_run
from megatron_dscoder.preprocess.report.markdown import write_report

#: What the one-line summary on stdout shows of the stats.
SUMMARY = ("documents_in", "documents_out", "tokens", "bad_input", "filtered", "quality", "fim")
#: OSErrors that a user fixes (free space, permissions), reported in one line without traceback.
USER_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EROFS,
    errno.EPERM,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
)


def build_parser() -> argparse.ArgumentParser:
    """Every flag, generated from the fields of
    :class:`~megatron_dscoder.preprocess.config.PreprocessConfig`."""
    parser = OneLineParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_flags(parser, PreprocessConfig)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The options the flags give (flags left out keep the dataclass defaults)."""
    return PreprocessConfig(**values_from_args(PreprocessConfig, args))


def os_error_line(err: OSError, options: PreprocessConfig) -> str:
    """``no space left on device (PATH)`` and the like, naming the file or its place."""
    if isinstance(err, NoSpaceError):
        return str(err)
    where = (
        err.filename or options.tmp_dir or os.path.dirname(os.path.abspath(options.output_prefix))
    )
    return f"{(err.strerror or str(err)).lower()} ({where})"


@contextmanager
def environment_errors(options: PreprocessConfig) -> Iterator[None]:
    """A full disk or an unwritable place (the environment, not a bug) as a :class:`UserError`
    naming the place."""
    try:
        yield
    except OSError as err:
        if err.errno not in USER_ERRNOS:
            raise
        raise UserError(os_error_line(err, options)) from err


def prepare(argv: Sequence[str] | None) -> PreparedRun:
    """Flags, options, the output files and every check of the run, before any work."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = config_from_args(args)
    if options.stats_json:
        check_output_path(options.stats_json, "--stats-json", directory=False)
    if options.tmp_dir:
        check_output_path(options.tmp_dir, "--tmp-dir", directory=True)
    if options.engine == "ray":
        check_ray_address(options.ray_address)
    with environment_errors(options):
        return prepare_run(options)


def resume_hint(options: PreprocessConfig) -> str:
    """What a rerun after a failure does: resume from a kept ``--work-dir``, or start over."""
    if options.work_dir:
        return (
            f"rerun the same command to resume: finished tasks are kept in --work-dir "
            f"{options.work_dir} and the output is byte-identical to an uninterrupted run"
        )
    return (
        "rerun the same command to start over; give --work-dir DIR to let a rerun after a "
        "failure resume where it stopped"
    )


def work(prepared: PreparedRun) -> int:
    """Run the pipeline; a one-line summary on stdout, then a line naming what was written."""
    options = prepared.config
    try:
        with environment_errors(options):
            stats = execute(prepared)
    except ClusterFailure as err:
        raise UserError(f"{err}; {resume_hint(options)}") from err
    summary = {k: stats[k] for k in SUMMARY}
    summary["decontaminated"] = stats["decontamination"]["dropped"]
    summary["dedup_dropped"] = stats["dedup"].get("dropped", 0)
    out = sys.stdout
    out.write(json.dumps(summary, ensure_ascii=False) + "\n")
    written = (
        f"{options.output_prefix}.parts/ ({stats['output_parts']} "
        f"part{'s' if stats['output_parts'] > 1 else ''}; train with "
        f"--data-path {options.output_prefix}.parts/manifest.json)"
        if stats["output_parts"]
        else f"{options.output_prefix}.bin/.idx"
    )
    out.write(f"wrote {written} in {stats['seconds']['total']:.1f}s\n")
    if options.report:
        out.write(f"wrote {write_report(stats, options.report)}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline; 0 on success; a user's mistake is one line on stderr, exit status 2
    when found before work starts, 1 after (:func:`megatron_dscoder.errors.run_cli`)."""
    return run_cli(lambda: prepare(argv), work, user_errors=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    raise SystemExit(main())
