"""Pretrain a DeepSeek-Coder model on megatron-core.

    # one process, CPU toy run
    python -m megatron_dscoder.pretrain --model debug --mock-data --train-iters 5
    # TP=2 with sequence parallelism on 2 CPU processes (gloo) or 2 GPUs (NCCL), with checkpoints
    torchrun --nproc-per-node 2 -m megatron_dscoder.pretrain --model debug --mock-data \\
        --tensor-model-parallel-size 2 --sequence-parallel --save ckpt --load ckpt
    # plan a 33B layout without GPUs
    python -m megatron_dscoder.pretrain --model 33b --dry-run \\
        --tensor-model-parallel-size 8 --pipeline-model-parallel-size 2

This file only wires parts together; each part lives in its own module.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from megatron_dscoder import lifeline
from megatron_dscoder.config.cli import parse, world_size_from_env
from megatron_dscoder.config.run import RunConfig
from megatron_dscoder.errors import Plan, UserError, run_cli
from megatron_dscoder.training import planner


def latest_checkpoint_metadata(load: str) -> dict[str, Any] | None:
    """What the latest checkpoint under ``load`` records (model, architecture), or None."""
    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )

    found = find_latest_checkpoint(load)
    return None if found is None else read_checkpoint_metadata(found)


@dataclass(frozen=True)
class Launch:
    """A run checked before anything is built: its flags, its config, and where it starts
    (``None`` for ``--dry-run``, which only plans)."""

    args: argparse.Namespace
    run: RunConfig
    start: Any  # resume.Start (imported when needed: it loads torch); None for --dry-run
    started: float


def prepare(argv: Sequence[str] | None = None) -> Launch:
    """Flags, config and every check made before the model is built (a mistake found here
    exits 2): data prefixes and splits, outputs, the checkpoint to resume."""
    lifeline.tie_to_launcher()  # before anything slow: an orphaned worker must not train on
    started = time.monotonic()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("megatron").setLevel(logging.WARNING)
    args, run = parse(argv, world_size_from_env(), latest_checkpoint_metadata)
    if args.dry_run:
        return Launch(args, run, None, started)
    from megatron_dscoder.training.resume import preflight

    return Launch(args, run, preflight(run), started)


def work(launch: Launch, *, keep_process_group: bool = False) -> int:
    """Plan (``--dry-run``), or build and train; returns the exit status.

    ``keep_process_group`` leaves torch.distributed's default group up (megatron-core's groups
    are always torn down), so one launch can run several layouts in turn.
    """
    if launch.start is None:
        return planner.dry_run(
            launch.run, launch.args.gpu_memory_gib, launch.args.assumed_efficiency
        )

    import torch

    from megatron_dscoder.datasets.gpt import build_train_valid
    from megatron_dscoder.parallel import distributed
    from megatron_dscoder.runtime import exit_marker
    from megatron_dscoder.training.build import (
        build_model_chunks,
        build_optimizer,
        build_transformer_config,
    )
    from megatron_dscoder.training.loop import Trainer, run_metadata
    from megatron_dscoder.training.metrics import MetricsLogger, sinks_for
    from megatron_dscoder.training.resume import restore

    start = launch.start
    run = start.run
    distributed.initialize(run.parallel, run.train.seed, run.parallel.distributed_timeout_minutes)
    metrics = None
    try:
        model = build_model_chunks(run, build_transformer_config(run))
        optimizer = build_optimizer(run, model)
        state = restore(start, model, optimizer)
        datasets = build_train_valid(run, start.with_valid)
        description = {**run_metadata(run), "save": run.checkpoint.save}
        sinks = sinks_for(run.logging, description) if distributed.is_logging_rank() else []
        metrics = MetricsLogger(sinks)
        final = Trainer(run, model, optimizer, datasets, metrics, state, launch.started).train()
        if metrics is not None:
            metrics.close()
            metrics = None
        exit_marker.record(final.iteration, torch.distributed.get_rank())
    finally:
        if metrics is not None:
            metrics.close()
        distributed.destroy(keep_process_group=keep_process_group)
    return 0


def main(argv: Sequence[str] | None = None, *, keep_process_group: bool = False) -> int:
    """Entry point for code (tests, examples): errors propagate; see :func:`cli`."""
    return work(prepare(argv), keep_process_group=keep_process_group)


def _as_user_error(step: Callable[[Plan], int | Launch], arg: Plan) -> int | Launch:
    """``step(arg)``, with the training room's own user errors (a refused checkpoint, a loss that
    stayed non-finite) raised as :class:`~megatron_dscoder.errors.UserError`. Their classes are
    imported only when something was raised: they load torch, which a flag mistake never needs."""
    try:
        return step(arg)
    except UserError:
        raise
    except Exception as err:
        from megatron_dscoder.checkpointing.checkpoint import CheckpointError
        from megatron_dscoder.training.loop import NonFiniteLossError

        if isinstance(err, CheckpointError | NonFiniteLossError):
            raise UserError(str(err)) from err
        raise


def cli(argv: Sequence[str] | None = None) -> int:
    """``dscoder-pretrain``: a user's mistake or a failed save is one line (no traceback);
    exit status 2 when found before the model is built, 1 after
    (:func:`megatron_dscoder.errors.run_cli`)."""
    return run_cli(
        lambda: _as_user_error(prepare, argv),
        lambda launch: _as_user_error(work, launch),
    )


if __name__ == "__main__":
    sys.exit(cli())
