"""The options of a preprocessing run, and the ordered list of stages they switch on.

:class:`PreprocessConfig` is the one configuration object of a run: frozen, validated on
creation, built from the command line (every field carries its flag, see
:mod:`megatron_dscoder.config.flags`; :mod:`.cli` generates the parser) or in code, and sent as
it is to every worker, together with the few values resolved from it and the tokenizer
(:class:`.stages.StageConfig`). Each default is written once, here or in a sub-config
(:class:`.quality.QualityConfig`, :class:`.minhash.MinHashConfig`,
:class:`.decontam.DecontamConfig`, :class:`.readers.FieldNames`).

Every partition runs the enabled stages of two lists, in order (:mod:`.stages` runs them):
:data:`RECORD_STAGES` on the files read from an input task (before they are split into
repository-level and file-level records), :data:`SAMPLE_STAGES` on the samples of a partition
(single files in pass 1, Algorithm 1 repository samples in pass 2). A stage is
``Stage(name, enabled, run)``: ``enabled(options)`` says whether its flag switches it on,
``run(items, config, stats)`` returns the items that go on (records; or the :class:`.stages.Batch`
of samples). The runner times each stage as ``stage_seconds_summed[name]`` and counts the items
it drops as ``dropped_by_stage[name]`` in the stats JSON.

Adding a stage with a flag is two files: the stage's module with its function, and here a
field for its flag plus one line in a list::

    # preprocess/license.py
    def license_stage(records: list[Record], config: StageConfig, stats: PartitionStats):
        return [r for r in records if "SPDX-License-Identifier: GPL" not in r.text]

    # preprocess/options.py: a field of PreprocessConfig, and the list line
    drop_gpl: bool = opt(False, "drop files that declare a GPL licence")
    Stage("license", lambda o: o.drop_gpl, license_stage),
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from megatron_dscoder.config.flags import ConfigError, check_choices, flag, opt, section
from megatron_dscoder.preprocess.decontam import DecontamConfig, decontaminate_stage
from megatron_dscoder.preprocess.encode import BATCH_CHARS, CHUNK_CHARS, tokenize_stage
from megatron_dscoder.preprocess.engine import ENGINES
from megatron_dscoder.preprocess.filters import filter_stage
from megatron_dscoder.preprocess.fim import fim_stage
from megatron_dscoder.preprocess.minhash import MinHashConfig, minhash_stage, word_hashes_stage
from megatron_dscoder.preprocess.quality import QualityConfig, quality_stage
from megatron_dscoder.preprocess.readers import FieldNames

if TYPE_CHECKING:
    from megatron_dscoder.preprocess.stages import Batch, StageConfig
    from megatron_dscoder.preprocess.stats import PartitionStats

REQUIRED: Any = MISSING
"""Marks the options every run names (no default; ``required=True`` on the command line)."""
MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """Options of a preprocessing run; each field is the flag of the same name (see
    :mod:`megatron_dscoder.config.flags`) unless it names another."""

    inputs: tuple[str, ...] = opt(
        REQUIRED, "JSONL(.gz/.zst) or Parquet files, or directories of repository checkouts",
        flag="--input", metavar="PATH", required=True,
    )  # fmt: skip
    tokenizer_model: str = opt(
        REQUIRED, "HF tokenizer directory (or tokenizer.json) with the special tokens",
        metavar="DIR", required=True,
    )  # fmt: skip
    output_prefix: str = opt(
        REQUIRED, "writes PREFIX.bin and PREFIX.idx", metavar="PREFIX", required=True
    )
    workers: int | None = opt(None, "worker processes (default: CPU count); 1 runs in-process")
    fim_rate: float = opt(0.5, "FIM probability per sample (default: %(default)s)")
    fim_spm_rate: float = opt(
        0.0, "probability of SPM instead of PSM for a FIM sample (default: %(default)s)"
    )
    bos: bool = opt(
        False, "start every document with BOS (default: no; documents are separated by EOS "
        "only, whatever the tokenizer's post-processor would add; recorded in the stats JSON)",
        action=argparse.BooleanOptionalAction,
    )  # fmt: skip
    seed: int = opt(1234, "seed of FIM and of ordering tie-breaks")
    stats_json: str | None = opt(None, "write run statistics here", metavar="FILE")
    report: str | None = opt(
        None, "write the data report here: report.md (per language: files, bytes, share, "
        "tokens; drops per stage) and PNG charts", metavar="DIR",
    )  # fmt: skip
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
        None, "keep the run's work directory here; rerunning the same command after a kill "
        "skips the tasks it finished (default: a temporary one, removed at the end)", metavar="DIR",
    )  # fmt: skip
    partition_mb: float | None = opt(
        None, "input per first-pass task: a byte range of a JSONL file (default: 256 with "
        "--engine ray, 4 locally)",
    )  # fmt: skip
    output_shard_mb: float | None = opt(
        None, "write PREFIX.parts/part-N.bin/.idx of about this size and PREFIX.parts/"
        "manifest.json (a --data-path blend) instead of one PREFIX.bin/.idx; 0: one pair "
        "(default: 1024 with --engine ray, else 0)",
    )  # fmt: skip
    apply_filters: bool = opt(True, "disable the paper's file filters", flag="--no-filters")
    quality: QualityConfig | None = section(
        QualityConfig, "no quality screening at all (syntax, rules)", off="--no-quality"
    )
    repo_level: bool = opt(
        True, "one sample per file for every language (no dependency ordering)",
        flag="--no-repo-level",
    )  # fmt: skip
    progress: bool = opt(True, "no progress bar", flag="--no-progress")
    engine: str = opt(
        "local", "local: a process pool of --workers (default); ray: Ray tasks on a Ray cluster",
        choices=ENGINES,
    )  # fmt: skip
    ray_address: str | None = opt(
        None, "Ray cluster to join (e.g. auto, ray://head:10001); default: start a local Ray",
        metavar="ADDR",
    )  # fmt: skip
    keep_shards: bool = opt(
        False, "also keep the per-shard PREFIX.shards/shard-N.bin/.idx (blendable at training time)"
    )
    dedup: MinHashConfig | None = section(
        MinHashConfig, "no near-deduplication", off="--no-dedup", prefix="dedup"
    )
    dedup_group_mb: float = opt(
        64.0, "near-dedup work unit: MB of band records per key range of a band's merge, and "
        "of candidate pairs per verification task (default: %(default)s)",
    )  # fmt: skip
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
        return int(self.dedup_group_mb * MIB)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else os.cpu_count() or 1


class Stage(NamedTuple):
    """One per-partition stage: its name in the stats, whether the options switch it on, and
    ``run(items, config, stats) -> items``."""

    name: str
    enabled: Callable[[PreprocessConfig], bool]
    run: Callable[[Any, Any, Any], Any]


def hooks_stage(batch: Batch, config: StageConfig, stats: PartitionStats) -> Batch:
    """The library users' sample hooks, in order (``PreprocessConfig.sample_hooks``)."""
    for hook in config.options.sample_hooks:
        batch.samples = hook(batch.samples, stats)
    return batch


def _always(_: PreprocessConfig) -> bool:
    return True


#: On the records of an input task, before they are split by level (in order).
RECORD_STAGES: list[Stage] = [
    Stage("filter", lambda o: o.apply_filters, filter_stage),
    Stage("quality", lambda o: o.quality is not None, quality_stage),
]
#: On the samples of a partition, up to their tokens (in order).
SAMPLE_STAGES: list[Stage] = [
    Stage("hooks", _always, hooks_stage),
    Stage(
        "word_hashes", lambda o: o.decontam is not None or o.dedup is not None, word_hashes_stage
    ),  # fmt: skip
    Stage("decontaminate", lambda o: o.decontam is not None, decontaminate_stage),
    Stage("minhash", lambda o: o.dedup is not None, minhash_stage),
    Stage("fim", _always, fim_stage),
    Stage("tokenize", _always, tokenize_stage),
]
