"""The command-line surface is frozen: every entry point's flags, as ``--help`` lists them.

Launchers, SLURM scripts and users' notes depend on these names. A change here is deliberate:
update ``CLI_SURFACE`` in the same commit and say so in its message.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest
import tomllib

ENTRY_POINTS = {
    "dscoder-pretrain": "megatron_dscoder.training.train:main",
    "dscoder-preprocess": "megatron_dscoder.preprocess.cli:main",
    "dscoder-train-tokenizer": "megatron_dscoder.preprocess.tokenizer.cli:main",
    "dscoder-preprocess-sft": "megatron_dscoder.instruct.cli:main",
    "dscoder-convert": "megatron_dscoder.convert.cli:main",
    "dscoder-generate": "megatron_dscoder.evaluation.generate:main",
    "dscoder-eval-humaneval": "megatron_dscoder.evaluation.humaneval:main",
}


def help_flags(target: str) -> set[str]:
    """The option strings of ``--help``'s option lines (not those quoted in descriptions)."""
    module, function = target.split(":")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        getattr(importlib.import_module(module), function)(["--help"])
    assert done.value.code == 0
    flags: set[str] = set()
    for line in out.getvalue().splitlines():
        if re.match(r"^ {2}-", line):
            names = re.split(r" {2,}", line.strip())[0]
            flags.update(re.findall(r"--[a-z0-9][a-z0-9-]*", names))
    return flags


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_cli_surface_is_frozen(name: str) -> None:
    assert help_flags(ENTRY_POINTS[name]) == set(CLI_SURFACE[name])


def test_console_scripts_match_the_entry_points() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert set(scripts) == set(ENTRY_POINTS)
    for name, target in ENTRY_POINTS.items():
        assert scripts[name].split(":")[0] == target.split(":")[0]


CLI_SURFACE: dict[str, list[str]] = {
    "dscoder-convert": [
        "--allow-unverified-checkpoint",
        "--bos",
        "--chat-template",
        "--check-logits",
        "--dtype",
        "--help",
        "--load",
        "--logits-tolerance",
        "--max-shard-size-gb",
        "--no-bos",
        "--pipeline-model-parallel-size",
        "--save",
        "--tensor-model-parallel-size",
        "--tokenizer-model",
    ],
    "dscoder-eval-humaneval": [
        "--bos",
        "--dtype",
        "--fim-corpus",
        "--fim-lines-per-file",
        "--fim-max-examples",
        "--help",
        "--limit",
        "--max-new-tokens",
        "--model",
        "--no-bos",
        "--output",
        "--samples",
        "--seed",
        "--tasks",
        "--temperature",
        "--timeout",
        "--workers",
    ],
    "dscoder-generate": [
        "--bos",
        "--chat",
        "--device",
        "--dtype",
        "--file",
        "--fim-prefix",
        "--fim-prefix-file",
        "--fim-suffix",
        "--fim-suffix-file",
        "--help",
        "--max-new-tokens",
        "--model",
        "--no-bos",
        "--prompt",
        "--prompt-file",
        "--repo",
        "--repo-context-tokens",
        "--seed",
        "--show-full",
        "--stop",
        "--system",
        "--temperature",
        "--top-p",
    ],
    "dscoder-preprocess": [
        "--bos",
        "--decontaminate-files",
        "--dedup-bands",
        "--dedup-group-mb",
        "--dedup-ngram",
        "--dedup-num-perm",
        "--dedup-rows",
        "--dedup-threshold",
        "--drop-minified",
        "--engine",
        "--fim-rate",
        "--fim-spm-rate",
        "--help",
        "--input",
        "--keep-shards",
        "--lang-field",
        "--max-function-lines",
        "--max-record-mb",
        "--no-bos",
        "--no-decontaminate",
        "--no-dedup",
        "--no-dedup-verify",
        "--no-drop-generated",
        "--no-filters",
        "--no-progress",
        "--no-quality",
        "--no-repo-level",
        "--no-syntax-check",
        "--output-prefix",
        "--output-shard-mb",
        "--partition-mb",
        "--path-field",
        "--ray-address",
        "--repo-field",
        "--report",
        "--seed",
        "--stats-json",
        "--syntax-max-error-fraction",
        "--text-field",
        "--tmp-dir",
        "--tokenizer-model",
        "--work-dir",
        "--workers",
    ],
    "dscoder-preprocess-sft": [
        "--help",
        "--input",
        "--max-record-mb",
        "--output-prefix",
        "--stats-json",
        "--tokenizer-model",
    ],
    "dscoder-pretrain": [
        "--adam-beta1",
        "--adam-beta2",
        "--adam-eps",
        "--allow-unverified-checkpoint",
        "--allow-vocab-mismatch",
        "--assumed-efficiency",
        "--async-save",
        "--attention-backend",
        "--bf16",
        "--bos",
        "--ckpt-fully-reshardable",
        "--clip-grad",
        "--context-parallel-size",
        "--cross-entropy-fusion-impl",
        "--cross-entropy-loss-fusion",
        "--data-cache-path",
        "--data-path",
        "--ddp-bucket-size",
        "--decoder-first-pipeline-num-layers",
        "--decoder-last-pipeline-num-layers",
        "--distributed-timeout-minutes",
        "--dry-run",
        "--eval-interval",
        "--eval-iters",
        "--exit-duration-in-mins",
        "--exit-interval",
        "--exit-signal-handler",
        "--finetune",
        "--global-batch-size",
        "--gpu-memory-gib",
        "--help",
        "--keep-checkpoints",
        "--load",
        "--log-interval",
        "--lr",
        "--lr-decay-style",
        "--lr-warmup-iters",
        "--manual-gc",
        "--manual-gc-interval",
        "--max-nonfinite-iters",
        "--metrics-jsonl",
        "--micro-batch-size",
        "--min-lr",
        "--mock-data",
        "--model",
        "--no-bf16",
        "--no-bias-swiglu-fusion",
        "--no-bos",
        "--no-cross-entropy-loss-fusion",
        "--no-gradient-accumulation-fusion",
        "--no-load-optim",
        "--no-load-rng",
        "--no-overlap-grad-reduce",
        "--no-overlap-param-gather",
        "--no-rope-fusion",
        "--num-workers",
        "--overlap-grad-reduce",
        "--overlap-param-gather",
        "--peak-tflops",
        "--pipeline-model-parallel-size",
        "--recompute-granularity",
        "--recompute-method",
        "--recompute-modules",
        "--recompute-num-layers",
        "--save",
        "--save-interval",
        "--seed",
        "--seq-length",
        "--sequence-parallel",
        "--split",
        "--stage",
        "--tensor-model-parallel-size",
        "--tensorboard-dir",
        "--tokenizer-model",
        "--tp-comm-overlap",
        "--train-iters",
        "--use-distributed-optimizer",
        "--wandb-exp-name",
        "--wandb-project",
        "--wandb-save-dir",
        "--weight-decay",
        "--world-size",
    ],
    "dscoder-train-tokenizer": [
        "--help",
        "--input",
        "--layout",
        "--max-chars",
        "--no-filters",
        "--output",
        "--text-field",
        "--vocab-size",
    ],
}
