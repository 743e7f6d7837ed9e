"""Where a run starts: from scratch, resumed from ``--load``, or fine-tuned from its weights."""

from __future__ import annotations

import logging

from megatron_dscoder import checkpointing
from megatron_dscoder.config import RunConfig
from megatron_dscoder.training.loop import TrainState

logger = logging.getLogger(__name__)


def restore(run: RunConfig, model: list, optimizer) -> TrainState:  # noqa: ANN001
    """Load the newest complete checkpoint under ``--load`` (if any) into model and optimizer.

    A checkpoint of another size, or a truncated one, fails here — before any training step and
    before anything is written. ``--finetune`` takes the weights only and starts counting at 0.
    """
    ckpt = run.checkpoint
    if not ckpt.load:
        return TrainState()
    path = checkpointing.find_latest_checkpoint(ckpt.load)
    if path is None:
        if ckpt.finetune or ckpt.load != ckpt.save:
            raise checkpointing.CheckpointError(f"{ckpt.load}: no complete checkpoint found")
        logger.info("no checkpoint under %s yet: starting from scratch", ckpt.load)
        return TrainState()
    checkpointing.verify_checkpoint(path)
    meta = checkpointing.read_checkpoint_metadata(path)
    checkpointing.check_architecture(meta, run.arch, path)
    weights_only = ckpt.finetune or ckpt.no_load_optim
    common = checkpointing.load_checkpoint(
        path, model=model, optimizer=None if weights_only else optimizer,
        load_rng=not (ckpt.finetune or ckpt.no_load_rng))
    if ckpt.finetune:
        logger.info("fine-tuning from the weights of %s; counters reset", path)
        return TrainState()
    state = TrainState(**common["train_state"])
    logger.info("resumed from %s at iteration %d (%d samples consumed)", path, state.iteration,
                state.consumed_samples)
    return state
