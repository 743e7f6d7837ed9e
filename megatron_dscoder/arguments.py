"""The command line: Megatron-LM's flag names, parsed into a validated :class:`RunConfig`.

The surface is deliberately small; a model is named by its registry entry (``--model 33b``),
never by dimensions.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from megatron_dscoder.config import ParallelConfig, RunConfig, TrainConfig
from megatron_dscoder.models import MODELS, get_model


def world_size_from_env() -> int:
    """The world size torchrun announced, or 1 for a plain ``python -m`` launch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_parser() -> argparse.ArgumentParser:
    """All flags of ``python -m megatron_dscoder.pretrain``."""
    p = argparse.ArgumentParser(
        prog="python -m megatron_dscoder.pretrain",
        description="Pretrain a DeepSeek-Coder model with megatron-core.",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help=f"registry size: {', '.join(MODELS)}")

    g = p.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--use-distributed-optimizer", action="store_true")
    g.add_argument("--decoder-first-pipeline-num-layers", type=int, default=None)
    g.add_argument("--decoder-last-pipeline-num-layers", type=int, default=None)

    g = p.add_argument_group("training")
    g.add_argument("--micro-batch-size", type=int, default=1)
    g.add_argument("--global-batch-size", type=int, default=8)
    g.add_argument("--seq-length", type=int, default=None,
                   help="default: the model's max_position_embeddings")
    g.add_argument("--train-iters", type=int, default=10)
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--seed", type=int, default=1234)

    g = p.add_argument_group("data and logging")
    g.add_argument("--mock-data", action="store_true", help="deterministic synthetic tokens")
    g.add_argument("--metrics-jsonl", default=None, help="append one JSON object per iteration")
    g.add_argument("--dry-run", action="store_true",
                   help="validate the configuration, print parameter counts, exit")
    g.add_argument("--world-size", type=int, default=None,
                   help="for --dry-run: the world size to plan for (default: torchrun's, "
                   "else TP x PP)")
    return p


def config_from_args(args: argparse.Namespace, world_size: int) -> RunConfig:
    """Turn parsed flags into a validated config (raises ConfigError / ValueError)."""
    arch = get_model(args.model)
    parallel = ParallelConfig(
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        sequence_parallel=args.sequence_parallel,
        use_distributed_optimizer=args.use_distributed_optimizer,
        decoder_first_pipeline_num_layers=args.decoder_first_pipeline_num_layers,
        decoder_last_pipeline_num_layers=args.decoder_last_pipeline_num_layers,
        world_size=world_size,
    )
    train = TrainConfig(
        micro_batch_size=args.micro_batch_size,
        global_batch_size=args.global_batch_size,
        seq_length=args.seq_length or arch.max_position_embeddings,
        train_iters=args.train_iters,
        lr=args.lr,
        seed=args.seed,
    )
    return RunConfig(model=args.model, arch=arch, parallel=parallel, train=train,
                     mock_data=args.mock_data, metrics_jsonl=args.metrics_jsonl)


def parse(argv: Sequence[str] | None, world_size: int) -> tuple[argparse.Namespace, RunConfig]:
    """Parse and validate; configuration errors exit with status 2 and the message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.world_size is not None:
        world_size = args.world_size
    elif args.dry_run and world_size == 1:
        # Planning without a launcher: one data-parallel replica of the requested layout.
        world_size = args.tensor_model_parallel_size * args.pipeline_model_parallel_size
    try:
        return args, config_from_args(args, world_size)
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
