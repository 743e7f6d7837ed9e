"""Where a run starts: from scratch, resumed from ``--load``, or fine-tuned from its weights.

:func:`preflight` runs before the model is built: a missing or truncated data prefix, a
checkpoint of another size or a truncated one, an optimizer state this layout cannot load, an
unwritable or foreign ``--save`` directory, an empty training split fail there, naming the
file, before any memory is allocated for the model. It also fixes the run's identity
(``run_id``): inherited from the checkpoint it resumes, fresh otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.checkpointing import checksums, outputs
from megatron_dscoder.config.run import ConfigError, RunConfig
from megatron_dscoder.data.indexed import check_prefix
from megatron_dscoder.datasets.gpt import check_bos, check_splits, parse_blend
from megatron_dscoder.datasets.sft import check_sft_prefix
from megatron_dscoder.model.build import have_transformer_engine
from megatron_dscoder.training import stages
from megatron_dscoder.training.loop import TrainState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """Where the run starts: the run as it starts (an interrupted fine-tune, e.g. the 16K stage,
    resumes from its own ``--save`` instead of reloading the weights it started from), the
    checkpoint to load (None: from scratch) and the run's id."""

    run: RunConfig
    path: Path | None
    run_id: str
    with_valid: bool = True
    """Whether a validation set can be built (its split is used and not empty)."""


def preflight(run: RunConfig) -> Start:
    """Validate data, outputs and the checkpoint to load, before any process-group work."""
    run, path = _checkpoint_to_load(run)
    ckpt = run.checkpoint
    resumed = path is not None and not ckpt.finetune
    run_id = (resumed and checkpointing.run_id_of(path)) or outputs.new_run_id()
    log = run.logging
    outputs.check_outputs(ckpt.save, log.metrics_jsonl, log.tensorboard_dir)
    if ckpt.save:
        same_dir = resumed and Path(ckpt.save).resolve() == path.parent.resolve()
        outputs.check_own(ckpt.save, run_id, adopt_legacy=same_dir)
    evaluate = bool(log.eval_interval)
    if run.data.data_path:
        evaluate = check_splits(run.data.data_path, run.data.split, evaluate)
    run = _with_bos_policy(run)
    return Start(run, path, run_id, with_valid=evaluate)


def _with_bos_policy(run: RunConfig) -> RunConfig:
    """The run with its data's BOS policy (read from the data, checked against ``--bos``):
    SFT data always opens with BOS, mock tokens never."""
    data = run.data
    if data.sft:
        bos = True
    elif data.data_path:
        from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids

        bos_id = special_token_ids(load_tokenizer(data.tokenizer_model), ()).bos
        bos = check_bos(list(data.data_path), bos_id, data.bos)
    else:
        bos = bool(data.bos)
    return dataclasses.replace(run, data=dataclasses.replace(data, bos=bos))


def _checkpoint_to_load(run: RunConfig) -> tuple[RunConfig, Path | None]:
    if run.data.data_path:
        prefixes, _ = parse_blend(list(run.data.data_path))
        for prefix in prefixes:
            check_prefix(prefix, run.arch.vocab_size)
            if run.data.sft:
                check_sft_prefix(prefix)
    if run.parallel.context_parallel_size > 1 and not have_transformer_engine():
        raise ConfigError(
            f"context-parallel-size={run.parallel.context_parallel_size} needs Transformer Engine "
            "on a GPU; without it, fit long sequences with --sequence-parallel and "
            "--recompute-granularity full (the CPU path of the 16K stage)"
        )
    ckpt = run.checkpoint
    if not ckpt.load:
        return run, None
    own = ckpt.finetune and ckpt.save and checkpointing.find_latest_checkpoint(ckpt.save)
    if own:  # the stage's own checkpoint, or refused: never a base's taken for the stage's
        stages.check_resume(
            checkpointing.read_checkpoint_metadata(own), run, own, not ckpt.no_load_optim
        )
        ckpt = dataclasses.replace(ckpt, finetune=False, load=ckpt.save)
        run = dataclasses.replace(run, checkpoint=ckpt)
        logger.info("resuming the interrupted %s stage from %s", stages.run_stage(run), own)
    path = checkpointing.find_latest_checkpoint(ckpt.load)
    if path is None:
        if ckpt.finetune or ckpt.load != ckpt.save:
            raise checkpointing.CheckpointError(f"{ckpt.load}: no complete checkpoint found")
        logger.info("no checkpoint under %s yet: starting from scratch", ckpt.load)
        return run, None
    checkpointing.verify_checkpoint(path)
    problem = checksums.manifest_problem(path, ckpt.allow_unverified_checkpoint)
    if problem:
        raise checkpointing.CheckpointError(problem)
    meta = checkpointing.read_checkpoint_metadata(path)
    checkpointing.check_architecture(meta, run.arch, path)
    if not ckpt.finetune:
        stages.check_resume(meta, run, path, not ckpt.no_load_optim)
    if not (ckpt.finetune or ckpt.no_load_optim):
        par = run.parallel
        checkpointing.check_optimizer_layout(
            meta,
            path,
            par.use_distributed_optimizer,
            tp=par.tensor_model_parallel_size,
            pp=par.pipeline_model_parallel_size,
        )
    return run, path


def restore(start: Start, model: list, optimizer) -> TrainState:
    """Load the checkpoint chosen by :func:`preflight` into model and optimizer.

    ``--finetune`` takes the weights only and starts counting at 0 (the 16K stage, continued
    pretraining from imported weights).
    """
    import torch

    ids = [start.run_id]  # a fresh id is drawn on every rank: rank 0's is the run's
    torch.distributed.broadcast_object_list(ids, src=0)
    start = dataclasses.replace(start, run_id=ids[0])
    path = start.path
    if path is None:
        return TrainState(run_id=start.run_id)
    ckpt = start.run.checkpoint
    weights_only = ckpt.finetune or ckpt.no_load_optim
    common = checkpointing.load_checkpoint(
        path,
        model=model,
        optimizer=None if weights_only else optimizer,
        load_rng=not (ckpt.finetune or ckpt.no_load_rng),
        allow_unverified=ckpt.allow_unverified_checkpoint,
    )
    if ckpt.finetune:
        logger.info("fine-tuning from the weights of %s; counters reset", path)
        return TrainState(run_id=start.run_id)
    state = TrainState(**{**common["train_state"], "run_id": start.run_id})
    logger.info(
        "resumed from %s at iteration %d (%d samples consumed)",
        path,
        state.iteration,
        state.consumed_samples,
    )
    return state
