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

import logging
import sys
import time
from collections.abc import Sequence

from megatron_dscoder import lifeline
from megatron_dscoder.config import cli as arguments
from megatron_dscoder.training import planner


def main(argv: Sequence[str] | None = None, *, keep_process_group: bool = False) -> int:
    """Entry point; returns the exit status.

    ``keep_process_group`` leaves torch.distributed's default group up (megatron-core's groups
    are always torn down), so one launch can run several layouts in turn.
    """
    lifeline.tie_to_launcher()  # before anything slow: an orphaned worker must not train on
    started = time.monotonic()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("megatron").setLevel(logging.WARNING)
    args, run = arguments.parse(argv, arguments.world_size_from_env())
    if args.dry_run:
        return planner.dry_run(run, args.gpu_memory_gib, args.assumed_efficiency)

    import torch

    from megatron_dscoder.parallel import distributed
    from megatron_dscoder.training import exit_marker
    from megatron_dscoder.training.build import (
        build_model_chunks,
        build_optimizer,
        build_transformer_config,
    )
    from megatron_dscoder.training.data import build_train_valid
    from megatron_dscoder.training.loop import Trainer, run_metadata
    from megatron_dscoder.training.metrics import MetricsLogger, sinks_for
    from megatron_dscoder.training.resume import preflight, restore

    try:
        start = preflight(run)
    except Exception as err:
        err.before_model = True  # a user's mistake found up front: exit status 2 in cli()
        raise
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
        final = Trainer(run, model, optimizer, datasets, metrics, state, started).train()
        if metrics is not None:
            metrics.close()
            metrics = None
        exit_marker.record(final.iteration, torch.distributed.get_rank())
    finally:
        if metrics is not None:
            metrics.close()
        distributed.destroy(keep_process_group=keep_process_group)
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from megatron_dscoder.config.run import ConfigError
    from megatron_dscoder.data.indexed import DataError
    from megatron_dscoder.training.checkpoint import CheckpointError
    from megatron_dscoder.training.loop import NonFiniteLossError
    from megatron_dscoder.training.outputs import OutputError

    return (ConfigError, DataError, CheckpointError, OutputError, NonFiniteLossError)


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` for the command line: a user's mistake or a failed save is one logged line (no
    traceback); exit status 2 when found before the model was built, 1 after."""
    try:
        return main(argv)
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        logging.getLogger(__name__).error("%s", err)
        return 2 if getattr(err, "before_model", False) else 1


if __name__ == "__main__":
    sys.exit(cli())
