"""Where a run starts: from scratch, resumed from ``--load``, or fine-tuned from its weights.

:func:`preflight` runs before the model is built: a missing or truncated data prefix, a
checkpoint of another size or a truncated one fails there, naming the file, before any memory is
allocated for the model and before anything is written.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from megatron_dscoder.config.run import ConfigError, RunConfig
from megatron_dscoder.data.indexed import check_prefix
from megatron_dscoder.model.build import have_transformer_engine
from megatron_dscoder.training import checkpoint as checkpointing
from megatron_dscoder.training.data import parse_blend
from megatron_dscoder.training.loop import TrainState

logger = logging.getLogger(__name__)


def preflight(run: RunConfig) -> tuple[RunConfig, Path | None]:
    """Validate data and the checkpoint to load, before anything is built or written.

    Returns the run as it will start (an interrupted fine-tune, e.g. the 16K stage, resumes from
    its own ``--save`` instead of reloading the weights it started from) and the checkpoint to
    load (None: from scratch).
    """
    if run.data.data_path:
        prefixes, _ = parse_blend(list(run.data.data_path))
        for prefix in prefixes:
            check_prefix(prefix, run.arch.vocab_size)
    if run.parallel.context_parallel_size > 1 and not have_transformer_engine():
        raise ConfigError(
            f"context-parallel-size={run.parallel.context_parallel_size} needs Transformer Engine "
            "on a GPU; without it, fit long sequences with --sequence-parallel and "
            "--recompute-granularity full (the CPU path of the 16K stage)"
        )
    ckpt = run.checkpoint
    if not ckpt.load:
        return run, None
    if ckpt.finetune and ckpt.save and checkpointing.find_latest_checkpoint(ckpt.save):
        ckpt = dataclasses.replace(ckpt, finetune=False, load=ckpt.save)
        run = dataclasses.replace(run, checkpoint=ckpt)
        logger.info("resuming the interrupted stage from %s", ckpt.save)
    path = checkpointing.find_latest_checkpoint(ckpt.load)
    if path is None:
        if ckpt.finetune or ckpt.load != ckpt.save:
            raise checkpointing.CheckpointError(f"{ckpt.load}: no complete checkpoint found")
        logger.info("no checkpoint under %s yet: starting from scratch", ckpt.load)
        return run, None
    checkpointing.verify_checkpoint(path)
    meta = checkpointing.read_checkpoint_metadata(path)
    checkpointing.check_architecture(meta, run.arch, path)
    return run, path


def restore(run: RunConfig, path: Path | None, model: list, optimizer) -> TrainState:  # noqa: ANN001
    """Load checkpoint ``path`` (from :func:`preflight`) into model and optimizer.

    ``--finetune`` takes the weights only and starts counting at 0 (the 16K stage, continued
    pretraining from imported weights).
    """
    if path is None:
        return TrainState()
    ckpt = run.checkpoint
    weights_only = ckpt.finetune or ckpt.no_load_optim
    common = checkpointing.load_checkpoint(
        path,
        model=model,
        optimizer=None if weights_only else optimizer,
        load_rng=not (ckpt.finetune or ckpt.no_load_rng),
    )
    if ckpt.finetune:
        logger.info("fine-tuning from the weights of %s; counters reset", path)
        return TrainState()
    state = TrainState(**common["train_state"])
    logger.info(
        "resumed from %s at iteration %d (%d samples consumed)",
        path,
        state.iteration,
        state.consumed_samples,
    )
    return state
