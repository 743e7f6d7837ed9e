"""The command line: Megatron-LM's flag names, parsed into a validated :class:`RunConfig`.

The surface is deliberately small; a model is named by its registry entry (``--model 33b``),
never by dimensions. Flags left out take the size's recipe (``megatron_dscoder/recipes.py``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from megatron_dscoder.config.recipes import (
    EXTEND_CONTEXT,
    STAGES,
    extend_context_recipe,
    pretrain_recipe,
)
from megatron_dscoder.config.run import (
    ATTENTION_BACKENDS,
    CheckpointConfig,
    ConfigError,
    DataConfig,
    LoggingConfig,
    ParallelConfig,
    RunConfig,
    TrainConfig,
)
from megatron_dscoder.model.registry import (
    MODELS,
    ModelArch,
    extend_context,
    get_model,
    with_vocab_size,
)


def world_size_from_env() -> int:
    """The world size torchrun announced, or 1 for a plain ``python -m`` launch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_parser() -> argparse.ArgumentParser:
    """All flags of ``python -m megatron_dscoder.pretrain``."""
    p = argparse.ArgumentParser(
        prog="python -m megatron_dscoder.pretrain",
        description="Pretrain a DeepSeek-Coder model with megatron-core.",
    )
    add = p.add_argument_group("model").add_argument
    add(
        "--model",
        default=None,
        help=f"registry size: {', '.join(MODELS)} (default with --load: the checkpoint's)",
    )
    add(
        "--stage",
        choices=STAGES,
        default="pretrain",
        help="extend-context: the 16K stage (RoPE base 1e5, interpolation x4) from --load",
    )
    add(
        "--attention-backend",
        choices=ATTENTION_BACKENDS,
        default="auto",
        help="core attention: auto = transformer_engine with TE on a GPU, else sdpa "
        "(torch SDPA); flash = flash-attn; unfused = megatron-core's DotProductAttention",
    )

    add = p.add_argument_group("parallelism").add_argument
    add("--tensor-model-parallel-size", type=int, default=1)
    add("--pipeline-model-parallel-size", type=int, default=1)
    add("--sequence-parallel", action="store_true")
    add(
        "--context-parallel-size",
        type=int,
        default=1,
        help="split long sequences over GPUs (needs Transformer Engine)",
    )
    add("--use-distributed-optimizer", action="store_true")
    add("--decoder-first-pipeline-num-layers", type=int, default=None)
    add("--decoder-last-pipeline-num-layers", type=int, default=None)

    add = p.add_argument_group("training").add_argument
    add("--micro-batch-size", type=int, default=1)
    add("--global-batch-size", type=int, default=None, help="default: the size's recipe")
    add("--seq-length", type=int, default=None, help="default: max_position_embeddings")
    add(
        "--train-iters",
        type=int,
        default=None,
        help="default: the recipe's (1.8T tokens at 4K; 1000 for extend-context; debug 10)",
    )
    add("--lr", type=float, default=None, help="peak LR; default: the size's recipe")
    add("--min-lr", type=float, default=None)
    add("--lr-decay-style", choices=("three-stage", "cosine", "constant"), default=None)
    add("--lr-warmup-iters", type=int, default=None)
    add("--weight-decay", type=float, default=0.1)
    add("--clip-grad", type=float, default=1.0)
    add("--adam-beta1", type=float, default=0.9)
    add("--adam-beta2", type=float, default=0.95)
    add("--seed", type=int, default=1234)
    add("--recompute-granularity", choices=("full", "selective"), default=None)
    add("--recompute-method", choices=("uniform", "block"), default=None)
    add("--recompute-num-layers", type=int, default=None)
    add(
        "--exit-interval",
        type=int,
        default=None,
        help="checkpoint and exit when the iteration is a multiple of this",
    )
    add(
        "--max-nonfinite-iters",
        type=int,
        default=10,
        help="stop (with a checkpoint) after this many NaN/inf losses in a row",
    )
    add(
        "--inject-nonfinite-loss-iters", type=int, nargs="*", default=[], help=argparse.SUPPRESS
    )  # fault injection for tests

    add = p.add_argument_group("data").add_argument
    add("--mock-data", action="store_true", help="deterministic synthetic tokens")
    add("--data-path", nargs="+", default=None, help="PREFIX or W1 PREFIX1 W2 PREFIX2 ...")
    add("--split", default="99,1,0", help="train,valid,test proportions")
    add("--data-cache-path", default=None)
    add("--tokenizer-model", default=None, help="HF tokenizer directory")
    add("--num-workers", type=int, default=None, help="default: 2 on GPU, 0 on CPU")

    add = p.add_argument_group("checkpointing").add_argument
    add("--save", default=None)
    add("--save-interval", type=int, default=None)
    add("--load", default=None, help="resume from the newest complete checkpoint here")
    add("--finetune", action="store_true", help="load weights only, reset counters")
    add("--no-load-optim", action="store_true")
    add("--no-load-rng", action="store_true")
    add("--keep-checkpoints", type=int, default=None, help="keep the newest K checkpoints")

    add = p.add_argument_group("logging").add_argument
    add("--log-interval", type=int, default=1)
    add("--eval-interval", type=int, default=None)
    add("--eval-iters", type=int, default=1)
    add("--metrics-jsonl", default=None, help="append one JSON object per logged iteration")
    add("--tensorboard-dir", default=None)
    add("--wandb-project", default=None)
    add("--wandb-exp-name", default=None)
    add("--wandb-save-dir", default=None)
    add("--peak-tflops", type=float, default=None, help="per-device peak for MFU")
    add("--dry-run", action="store_true", help="validate the configuration, print the plan, exit")
    add("--gpu-memory-gib", type=float, default=80.0, help="for --dry-run: memory per GPU")
    add(
        "--assumed-efficiency",
        type=float,
        default=0.45,
        help="for --dry-run: achieved fraction of --peak-tflops (default peak: 989, H800)",
    )
    add(
        "--world-size",
        type=int,
        default=None,
        help="for --dry-run: the world size to plan for (default: torchrun's, else TP x PP)",
    )
    return p


def resolve_arch(args: argparse.Namespace) -> tuple[str | None, ModelArch]:
    """The architecture: the registry size, or the checkpoint's when ``--model`` is omitted;
    the extend-context stage applies the 16K RoPE recipe to it."""
    model, arch = _base_arch(args)
    if args.stage == "extend-context" and arch.seq_len_interpolation_factor is None:
        arch = extend_context(arch, EXTEND_CONTEXT.factor, EXTEND_CONTEXT.rotary_base)
    return model, arch


def _base_arch(args: argparse.Namespace) -> tuple[str | None, ModelArch]:
    if args.model is not None:
        arch = get_model(args.model)
    elif args.load:
        from megatron_dscoder.training.checkpoint import (
            find_latest_checkpoint,
            read_checkpoint_metadata,
        )

        found = find_latest_checkpoint(args.load)
        if found is None:
            raise ConfigError(f"--model omitted and no checkpoint under --load {args.load}")
        meta = read_checkpoint_metadata(found)
        arch = ModelArch(**meta["arch"])
        return meta.get("model"), arch
    else:
        raise ConfigError("--model is required (or --load a checkpoint that records one)")
    if args.tokenizer_model:
        from megatron_dscoder.tokenizer import load_tokenizer, vocab_size

        arch = with_vocab_size(arch, vocab_size(load_tokenizer(args.tokenizer_model)))
    return args.model, arch


def config_from_args(args: argparse.Namespace, world_size: int) -> RunConfig:
    """Turn parsed flags into a validated config (raises ConfigError / ValueError)."""
    model, arch = resolve_arch(args)
    recipe = pretrain_recipe(model)
    extending = args.stage == "extend-context"
    if extending:
        recipe = extend_context_recipe(recipe, model)
        if not args.load:
            raise ConfigError("--stage extend-context needs --load CHECKPOINT (the 4K model)")
    if args.train_iters:
        train_iters = args.train_iters
    elif extending:
        train_iters = EXTEND_CONTEXT.train_iters
    else:
        train_iters = recipe.train_iters(args.seq_length or arch.max_position_embeddings)

    def pick(value, default):  # noqa: ANN001, ANN202 - flag if given, else the recipe's
        return default if value is None else value

    parallel = ParallelConfig(
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        sequence_parallel=args.sequence_parallel,
        context_parallel_size=args.context_parallel_size,
        use_distributed_optimizer=args.use_distributed_optimizer,
        decoder_first_pipeline_num_layers=args.decoder_first_pipeline_num_layers,
        decoder_last_pipeline_num_layers=args.decoder_last_pipeline_num_layers,
        world_size=world_size,
    )
    train = TrainConfig(
        micro_batch_size=args.micro_batch_size,
        global_batch_size=pick(args.global_batch_size, recipe.global_batch_size),
        seq_length=args.seq_length or arch.max_position_embeddings,
        train_iters=train_iters,
        lr=pick(args.lr, recipe.lr),
        min_lr=pick(args.min_lr, recipe.min_lr),
        lr_decay_style=pick(args.lr_decay_style, recipe.lr_decay_style),
        lr_warmup_iters=pick(args.lr_warmup_iters, recipe.lr_warmup_iters),
        weight_decay=args.weight_decay,
        clip_grad=args.clip_grad,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        seed=args.seed,
        recompute_granularity=args.recompute_granularity,
        recompute_method=args.recompute_method,
        recompute_num_layers=args.recompute_num_layers,
        max_nonfinite_iters=args.max_nonfinite_iters,
        exit_interval=args.exit_interval,
        inject_nonfinite_loss_iters=tuple(args.inject_nonfinite_loss_iters),
    )
    data = DataConfig(
        mock_data=args.mock_data or (args.dry_run and not args.data_path),
        data_path=args.data_path,
        split=args.split,
        data_cache_path=args.data_cache_path,
        tokenizer_model=args.tokenizer_model,
        num_workers=args.num_workers,
    )
    checkpoint = CheckpointConfig(
        save=args.save,
        save_interval=args.save_interval,
        load=args.load,
        finetune=args.finetune or extending,
        no_load_optim=args.no_load_optim,
        no_load_rng=args.no_load_rng,
        keep_checkpoints=args.keep_checkpoints,
    )
    logging_cfg = LoggingConfig(
        log_interval=args.log_interval,
        eval_interval=args.eval_interval,
        eval_iters=args.eval_iters,
        metrics_jsonl=args.metrics_jsonl,
        tensorboard_dir=args.tensorboard_dir,
        wandb_project=args.wandb_project,
        wandb_exp_name=args.wandb_exp_name,
        wandb_save_dir=args.wandb_save_dir,
        peak_tflops=args.peak_tflops,
    )
    return RunConfig(
        model=model,
        arch=arch,
        parallel=parallel,
        train=train,
        data=data,
        checkpoint=checkpoint,
        logging=logging_cfg,
        attention_backend=args.attention_backend,
    )


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
        run = config_from_args(args, world_size)
    except (ValueError, OSError) as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
    if not args.dry_run:  # a plan may target a GPU this machine lacks
        from megatron_dscoder.model.attention import BackendUnavailableError, resolve_backend

        try:
            resolve_backend(run.attention_backend)  # before anything is built
        except BackendUnavailableError as err:  # the environment, not the flags: no usage text
            parser.exit(2, f"{parser.prog}: error: {err}\n")
    return args, run
