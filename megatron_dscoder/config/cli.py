"""The command line: Megatron-LM's flag names, applied to a recipe in one override step.

A run starts from a recipe (:func:`.recipes.pretrain` for ``--model``, or the architecture a
``--load`` checkpoint records), then :func:`override` replaces exactly the fields whose flags were
given, by name (``--train-iters`` -> ``TrainConfig.train_iters``). The flags are generated from
the config dataclasses' fields (type, help and choices from :func:`~.run.opt`); they have no
defaults of their own: a flag left out keeps the recipe's value, and every default is written
once, in the dataclass or the recipe. A model is named by its registry entry (``--model 33b``),
never by dimensions.

    python -m megatron_dscoder.pretrain --model debug --mock-data --train-iters 5 --help
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from megatron_dscoder.config import recipes
from megatron_dscoder.config.flags import OneLineParser, add_flags
from megatron_dscoder.config.run import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    LoggingConfig,
    ParallelConfig,
    PerformanceConfig,
    RunConfig,
    TrainConfig,
)
from megatron_dscoder.model.registry import MODELS, ModelArch, with_vocab_size

SECTIONS: dict[str, type] = {
    "parallel": ParallelConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "checkpoint": CheckpointConfig,
    "logging": LoggingConfig,
    "performance": PerformanceConfig,
}
FIELD_SECTION: dict[str, str] = {
    f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
}
assert len(FIELD_SECTION) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values()), (
    "config field names are unique across sections, so a flag names exactly one field"
)
GROUP_TITLES = {"parallel": "parallelism", "train": "training", "checkpoint": "checkpointing"}


#: ``--load DIR`` -> the metadata of the latest checkpoint under it (None: there is none).
CheckpointMetadata = Callable[[str], "dict[str, Any] | None"]


def world_size_from_env() -> int:
    """The world size torchrun announced, or 1 for a plain ``python -m`` launch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_parser() -> argparse.ArgumentParser:
    """All flags of ``python -m megatron_dscoder.pretrain``."""
    p = OneLineParser(
        prog="python -m megatron_dscoder.pretrain",
        description="Pretrain a DeepSeek-Coder model with megatron-core. Flags left out keep "
        "the recipe's value (per-size defaults from the paper).",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model",
        help=f"registry size: {', '.join(MODELS)} (default with --load: the checkpoint's)",
    )
    model.add_argument(
        "--stage",
        choices=recipes.STAGES,
        default="pretrain",
        help="extend-context: the 16K stage (RoPE base 1e5, interpolation x4) from --load; "
        "sft: instruction tuning (LR 1e-5, 100 warm-up, cosine) from --load on "
        "dscoder-preprocess-sft data; continue-pretrain: DeepSeek-Coder-v1.5's run (2T tokens, "
        "4K, next-token only) from --load",
    )
    model.add_argument(
        "--allow-vocab-mismatch",
        action="store_true",
        help="train with a --tokenizer-model whose length differs from the --load "
        "checkpoint's tokenizer (still refused when its ids exceed the embedding rows)",
    )
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(GROUP_TITLES.get(section, section))
        add_flags(group, cls)
    add = p.add_argument_group("planning (--dry-run)").add_argument
    add("--dry-run", action="store_true", help="validate, print the plan, exit (1: does not fit)")
    add("--gpu-memory-gib", type=float, default=80.0, help="memory per GPU (default: 80)")
    add("--assumed-efficiency", type=float, default=0.45, help="fraction of peak (default: 0.45)")
    add("--world-size", type=int, default=None, help="default: torchrun's, else TP x PP")
    return p


def override(run: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """The one override step: each key is a config field name; returns a validated copy.

    A horizon derived from tokens is derived again when the batch or sequence changes, so
    ``--seq-length`` alone keeps the recipe's token budget.
    """
    changes: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if name not in FIELD_SECTION:
            raise ConfigError(f"no configuration field {name!r}")
        if isinstance(value, list):
            value = tuple(value)
        changes.setdefault(FIELD_SECTION[name], {})[name] = value
    train = changes.get("train", {})
    if (
        run.train.train_tokens is not None
        and "train_iters" not in train
        and {"seq_length", "global_batch_size"} & train.keys()
    ):
        train["train_iters"] = None
    sections = {s: dataclasses.replace(getattr(run, s), **c) for s, c in changes.items()}
    return dataclasses.replace(run, **sections)


def base_run(
    args: argparse.Namespace, checkpoint_metadata: CheckpointMetadata | None = None
) -> RunConfig:
    """The recipe the flags apply to: ``--model``'s, or the one of the ``--load`` checkpoint's
    architecture (read by ``checkpoint_metadata``); the tokenizer's vocabulary; the 16K stage
    when asked."""
    loaded = getattr(args, "load", None)
    meta = checkpoint_metadata(loaded) if loaded and checkpoint_metadata is not None else None
    if args.model is not None:
        try:
            run = recipes.pretrain(args.model)
        except KeyError as err:
            raise ConfigError(err.args[0]) from None
    elif loaded and checkpoint_metadata is not None:
        if meta is None:
            raise ConfigError(f"--model omitted and no checkpoint under --load {args.load}")
        model = meta.get("model")
        size = recipes.SIZES.get(model or "", recipes.UNREGISTERED)
        run = recipes.for_arch(ModelArch(**meta["arch"]), size, model=model)
    else:
        raise ConfigError("--model is required (or --load a checkpoint that records one)")
    if getattr(args, "tokenizer_model", None):
        from megatron_dscoder.tokenizer import load_tokenizer, vocab_size

        tokens = vocab_size(load_tokenizer(args.tokenizer_model))
        check_tokenizer_fits(args, tokens, meta)
        if args.model is not None:
            run = dataclasses.replace(run, arch=with_vocab_size(run.arch, tokens))
    if args.stage == "extend-context":
        _refuse_extended(loaded, meta)
        run = recipes.extend_context(run)
    elif args.stage == "sft":
        run = recipes.sft(run)
    elif args.stage == "continue-pretrain":
        run = recipes.continue_pretrain(run)
    return run


def check_tokenizer_fits(
    args: argparse.Namespace, tokens: int, meta: dict[str, Any] | None
) -> None:
    """Refuse, before anything is built, a tokenizer that is not the ``--load`` checkpoint's
    (``meta``: what its latest checkpoint records): more tokens than its embedding rows (ids out
    of range), or another length (another vocabulary: DeepSeek-Coder's 32K tokenizer on
    DeepSeek-LLM's 102,400 rows trains on meaningless embeddings) unless
    ``--allow-vocab-mismatch``."""
    if meta is None:
        return
    arch = ModelArch(**meta["arch"])
    rows = arch.padded_vocab_size()
    where = f"--tokenizer-model {args.tokenizer_model} has {tokens} tokens"
    if tokens > rows:
        raise ConfigError(f"{where}, more than the {rows} embedding rows of --load {args.load}")
    if tokens != arch.vocab_size and not args.allow_vocab_mismatch:
        raise ConfigError(
            f"{where}, but --load {args.load} was trained with a {arch.vocab_size}-token "
            "tokenizer; pass that tokenizer, or --allow-vocab-mismatch to train anyway"
        )


def _refuse_extended(load: str | None, meta: dict[str, Any] | None) -> None:
    """``--stage extend-context`` from a checkpoint whose RoPE is already scaled (``meta``: what
    the latest checkpoint under ``--load`` records): say so (the recipe would otherwise fail on
    the sequence length, or extend the 16K model again)."""
    arch = (meta or {}).get("arch") or {}
    factor = arch.get("seq_len_interpolation_factor") if isinstance(arch, dict) else None
    if factor is not None:
        raise ConfigError(
            f"--load {load}: already context-extended (RoPE base {arch.get('rotary_base')}, "
            f"interpolation x{factor:g}); --stage extend-context starts from a 4K pretraining "
            "checkpoint"
        )


def config_from_args(
    args: argparse.Namespace,
    world_size: int,
    checkpoint_metadata: CheckpointMetadata | None = None,
) -> RunConfig:
    """Parsed flags -> a validated, launchable config (raises ConfigError / ValueError)."""
    values = {k: v for k, v in vars(args).items() if k in FIELD_SECTION}
    values["world_size"] = world_size
    # Recipes train on mock tokens; a launch names its data explicitly (a dry run need not).
    if "data_path" in values:
        values.setdefault("mock_data", False)
    elif not values.get("mock_data") and not args.dry_run:
        raise ConfigError("give exactly one of --mock-data and --data-path")
    run = override(base_run(args, checkpoint_metadata), values)
    if run.data.sft and run.data.mock_data and not args.dry_run:
        raise ConfigError("--stage sft trains on --data-path PREFIX made by dscoder-preprocess-sft")
    if run.checkpoint.finetune and not run.checkpoint.load and not args.dry_run:
        if args.stage == "extend-context":
            raise ConfigError("--stage extend-context needs --load CHECKPOINT (the 4K model)")
        if args.stage in ("sft", "continue-pretrain"):
            raise ConfigError(f"--stage {args.stage} needs --load CHECKPOINT (the base model)")
        raise ConfigError("--finetune needs --load DIR")
    return run


def parse(
    argv: Sequence[str] | None,
    world_size: int,
    checkpoint_metadata: CheckpointMetadata | None = None,
) -> tuple[argparse.Namespace, RunConfig]:
    """Parse and validate; configuration errors exit with status 2 and one line.
    ``checkpoint_metadata`` reads the latest checkpoint under ``--load`` (for a run that omits
    ``--model``); the training entry point passes it, so that this room imports no training."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.world_size is not None:
        world_size = args.world_size
    elif args.dry_run and world_size == 1:
        # Planning without a launcher: one data-parallel replica of the requested layout.
        world_size = getattr(args, "tensor_model_parallel_size", 1) * getattr(
            args, "pipeline_model_parallel_size", 1
        )
    try:
        if not (math.isfinite(args.gpu_memory_gib) and args.gpu_memory_gib > 0):
            raise ConfigError(
                f"--gpu-memory-gib must be a finite number > 0, got {args.gpu_memory_gib}"
            )
        if not 0 < args.assumed_efficiency <= 1:  # NaN fails this too
            raise ConfigError(
                f"--assumed-efficiency must be in (0, 1], got {args.assumed_efficiency}"
            )
        run = config_from_args(args, world_size, checkpoint_metadata)
    except (ValueError, OSError) as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
    if not args.dry_run:  # a plan may target a GPU this machine lacks
        from megatron_dscoder.model.attention import BackendUnavailableError, resolve_backend

        try:
            resolve_backend(run.train.attention_backend)  # before anything is built
        except BackendUnavailableError as err:  # the environment, not the flags: no usage text
            parser.exit(2, f"{parser.prog}: error: {err}\n")
    return args, run
