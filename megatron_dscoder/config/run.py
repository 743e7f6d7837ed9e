"""Run configuration: small frozen dataclasses that validate themselves before any
process-group work.

A :class:`RunConfig` is built by a recipe function (:mod:`.recipes`), changed only through
:func:`dataclasses.replace` (the command line's one override step, :func:`.cli.override`, and
resume resolution both return copies), and never mutated after validation.

A bad layout (heads not divisible by TP, a batch that does not split over data parallelism, ...)
fails here, in the launching process, with a message that names the values, instead of as a hang
or an assert deep inside megatron-core on one rank of a 256-GPU job.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field
from typing import Any

from megatron_dscoder.config.flags import (  # ConfigError, opt, flag: also imported from here
    ConfigError,
    check_choices,
    flag,
    opt,
    require_positive,
)
from megatron_dscoder.config.performance import PerformanceConfig
from megatron_dscoder.config.splits import parse_split, split_pipeline_layers
from megatron_dscoder.model.backends import ATTENTION_BACKENDS
from megatron_dscoder.model.registry import ModelArch

RECIPE: Any = MISSING
"""Marks fields every recipe sets: required, with no default of their own."""


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """How the model and the batch are split over ``world_size`` processes."""

    tensor_model_parallel_size: int = opt(1)
    pipeline_model_parallel_size: int = opt(1)
    sequence_parallel: bool = opt(False, "shard norms and dropout over TP ranks")
    context_parallel_size: int = opt(1, "split long sequences over GPUs (Transformer Engine)")
    use_distributed_optimizer: bool = opt(False, "shard optimizer state over data parallelism")
    decoder_first_pipeline_num_layers: int | None = opt(None, "default: an even split")
    decoder_last_pipeline_num_layers: int | None = opt(None, "default: an even split")
    world_size: int = opt(1, cli=False)
    """From torchrun (``WORLD_SIZE``), or ``--world-size`` for a dry run."""
    distributed_timeout_minutes: int = opt(
        10, "a collective waiting longer (a dead or hung rank) ends the job (default: 10)"
    )

    def __post_init__(self) -> None:
        tp, pp, cp = (
            self.tensor_model_parallel_size,
            self.pipeline_model_parallel_size,
            self.context_parallel_size,
        )
        require_positive(
            self,
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "context_parallel_size",
            "world_size",
            "distributed_timeout_minutes",
        )
        require_positive(
            self,
            "decoder_first_pipeline_num_layers",
            "decoder_last_pipeline_num_layers",
            allow_zero=True,
        )
        if self.world_size % (tp * pp * cp):
            raise ConfigError(
                f"world size {self.world_size} is not divisible by tensor-model-parallel-size "
                f"{tp} x pipeline-model-parallel-size {pp}"
                + (f" x context-parallel-size {cp}" if cp > 1 else "")
            )
        if self.sequence_parallel and tp == 1:
            raise ConfigError(
                "--sequence-parallel needs tensor-model-parallel-size > 1 "
                "(got tensor-model-parallel-size=1)"
            )

    @property
    def data_parallel_size(self) -> int:
        """Replicas of the model: ``world_size / (TP * PP * CP)``."""
        return self.world_size // (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Batch geometry, horizon and optimiser settings.

    ``train_iters=None`` derives the horizon from ``train_tokens`` (the recipes' 1.8T tokens), so
    a run that changes its batch or sequence length keeps the recipe's token budget.
    """

    global_batch_size: int = opt(RECIPE, "sequences per iteration; default: the size's recipe")
    seq_length: int = opt(RECIPE, "default: the model's max_position_embeddings")
    lr: float = opt(RECIPE, "peak learning rate; default: the size's recipe")
    micro_batch_size: int = opt(1)
    train_iters: int | None = opt(None, "default: the recipe's token horizon (1.8T tokens)")
    train_tokens: float | None = opt(None, cli=False)
    """Token horizon behind ``train_iters`` when that is not given."""
    min_lr: float = opt(0.0)
    weight_decay: float = opt(0.1)
    adam_beta1: float = opt(0.9)
    adam_beta2: float = opt(0.95)
    adam_eps: float = opt(1e-8)
    clip_grad: float = opt(1.0, "gradient-norm clipping threshold, 0 disables (default: 1.0)")
    seed: int = opt(1234)
    bf16: bool | None = opt(None, "bf16 mixed precision (default: on with CUDA, off on CPU)")
    attention_backend: str = opt(
        "auto",
        "core attention: auto = transformer_engine with TE on a GPU, else sdpa (torch SDPA); "
        "flash = flash-attn; unfused = megatron-core's DotProductAttention (default: auto)",
        choices=ATTENTION_BACKENDS,
    )
    """Not part of the checkpoint: every backend has the same keys, so a run may switch."""
    """bf16 weights and activations; fp32 main weights, gradient accumulation and Adam state."""
    lr_decay_style: str = opt(
        "three-stage", "default: the size's recipe", choices=("three-stage", "cosine", "constant")
    )
    lr_warmup_iters: int = opt(0, "default: the size's recipe")
    recompute_granularity: str | None = opt(None, choices=("full", "selective"))
    recompute_method: str | None = opt(
        None, "with full recomputation", choices=("uniform", "block")
    )
    recompute_num_layers: int | None = opt(None)
    max_nonfinite_iters: int = opt(10, "stop, with a checkpoint, after this many NaN/inf losses")
    exit_interval: int | None = opt(None, "checkpoint and exit when the iteration is a multiple")
    inject_nonfinite_loss_iters: tuple[int, ...] = opt((), hidden=True)
    """Fault injection for tests: these iterations get a NaN loss (and NaN gradients)."""
    inject_nonfinite_grad_iters: tuple[int, ...] = opt((), hidden=True)
    """Fault injection for tests: one NaN gradient element on rank 0 (the loss stays finite)."""
    exit_signal_handler: bool = opt(
        False, "on SIGTERM: checkpoint at the next iteration on all ranks and exit 0"
    )
    exit_duration_in_mins: float | None = opt(None, "checkpoint and exit after this many minutes")

    def __post_init__(self) -> None:
        require_positive(self, "micro_batch_size", "global_batch_size", "seq_length", "lr")
        require_positive(self, "train_iters", "train_tokens", "adam_eps", "recompute_num_layers")
        require_positive(self, "max_nonfinite_iters", "exit_interval", "exit_duration_in_mins")
        require_positive(self, "min_lr", "weight_decay", "clip_grad", allow_zero=True)
        if self.train_iters is None:
            if self.train_tokens is None:
                raise ConfigError("give --train-iters (or a recipe's token horizon)")
            tokens_per_iter = self.global_batch_size * self.seq_length
            object.__setattr__(self, "train_iters", math.ceil(self.train_tokens / tokens_per_iter))
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr} is above --lr {self.lr}")
        check_choices(self)
        if self.recompute_granularity == "full" and self.recompute_method is None:
            raise ConfigError("recompute-granularity=full needs --recompute-method uniform|block")
        if not 0 <= self.lr_warmup_iters <= self.train_iters:
            raise ConfigError(
                f"lr-warmup-iters={self.lr_warmup_iters} must be within "
                f"[0, train-iters={self.train_iters}]"
            )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where samples come from: mock tokens, or Megatron ``.bin``/``.idx`` blends."""

    mock_data: bool = opt(False, "deterministic synthetic tokens")
    data_path: tuple[str, ...] | None = opt(None, "PREFIX or W1 PREFIX1 W2 PREFIX2 ...")
    split: str = opt("99,1,0", "train,valid,test proportions of each prefix (default: 99,1,0)")
    data_cache_path: str | None = opt(None, "where megatron-core caches its index arrays")
    tokenizer_model: str | None = opt(None, "HF tokenizer directory (tokenizer.json)")
    bos: bool | None = opt(
        None,
        "whether the data begins every document with BOS (dscoder-preprocess --bos); default: "
        "read from the data; recorded in checkpoints, whose exports and generation follow it",
    )
    num_workers: int | None = opt(None, "DataLoader processes; default: 2 on GPU, 0 on CPU")
    """On CPU loading runs inline (<1 % of a step): worker processes would compete with training
    for the cores."""
    sft: bool = opt(False, cli=False)
    """Instruction tuning (``--stage sft``): one ``dscoder-preprocess-sft`` prefix, packed, the
    loss on responses only (``datasets/sft.py``)."""

    def __post_init__(self) -> None:
        if self.data_path is not None:
            object.__setattr__(self, "data_path", tuple(self.data_path))
        if self.mock_data == bool(self.data_path):
            raise ConfigError("give exactly one of --mock-data and --data-path")
        if self.data_path and not self.tokenizer_model:
            raise ConfigError("--data-path needs --tokenizer-model DIR (an HF tokenizer directory)")
        parse_split(self.split)
        require_positive(self, "num_workers", allow_zero=True)
        if self.sft and self.data_path and len(self.data_path) != 1:
            raise ConfigError("--stage sft takes one --data-path PREFIX (no blend)")

    @property
    def split_fractions(self) -> tuple[float, float, float]:
        """(train, valid, test) as fractions summing to 1."""
        return parse_split(self.split)


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Sharded checkpoints (megatron-core dist_checkpointing, torch_dist)."""

    save: str | None = opt(None, "checkpoint directory")
    save_interval: int | None = opt(None)
    load: str | None = opt(None, "resume from the newest complete checkpoint here")
    finetune: bool = opt(False, "load weights only; reset counters, optimizer and schedule")
    no_load_optim: bool = opt(False)
    no_load_rng: bool = opt(False)
    keep_checkpoints: int | None = opt(None, "keep only the newest K complete checkpoints")
    async_save: bool = opt(
        False, "write checkpoints in background processes while training continues"
    )
    ckpt_fully_reshardable: bool = opt(
        False,
        "save the distributed optimizer's state so that it loads at any TP/PP (default: "
        "dp_reshardable, which loads at any DP size but only at the saving TP/PP); gathers "
        "each TP x PP shard's state on one rank per DP group",
    )
    allow_unverified_checkpoint: bool = opt(
        False, "load a --load checkpoint that has no checksum manifest (checksums.json)"
    )

    def __post_init__(self) -> None:
        # ``finetune`` without ``load`` is a valid recipe (the 16K stage before the command line
        # names its 4K checkpoint); the command line refuses to launch it.
        require_positive(self, "save_interval", "keep_checkpoints")
        if self.save_interval is not None and self.save is None:
            raise ConfigError(f"--save-interval {self.save_interval} needs --save DIR")
        for name in ("async_save", "ckpt_fully_reshardable"):
            if getattr(self, name) and self.save is None:
                raise ConfigError(f"{flag(name)} needs --save DIR")


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """What is reported, how often, and where."""

    log_interval: int = opt(1)
    eval_interval: int | None = opt(None)
    eval_iters: int = opt(1)
    metrics_jsonl: str | None = opt(None, "append one JSON object per logged iteration")
    tensorboard_dir: str | None = opt(None)
    wandb_project: str | None = opt(None, "W&B project (offline unless WANDB_API_KEY is set)")
    wandb_exp_name: str | None = opt(None)
    wandb_save_dir: str | None = opt(None)
    peak_tflops: float | None = opt(None, "per-device peak for MFU; default: the GPU's, if known")

    def __post_init__(self) -> None:
        require_positive(self, "log_interval", "eval_interval", "eval_iters", "peak_tflops")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one pretraining run needs; :meth:`validate` checks the combination."""

    model: str | None
    """Registry name; None for a checkpoint-defined architecture (e.g. imported from HF)."""
    arch: ModelArch
    train: TrainConfig
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(mock_data=True))
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    """Fusions, overlaps, recompute by module, manual GC (``config/performance.py``)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the values of the first problem found."""
        arch, par, train = self.arch, self.parallel, self.train
        tp, pp, dp = (
            par.tensor_model_parallel_size,
            par.pipeline_model_parallel_size,
            par.data_parallel_size,
        )
        if arch.num_attention_heads % tp:
            raise ConfigError(
                f"num_attention_heads={arch.num_attention_heads} of model "
                f"{self.model!r} is not divisible by tensor-model-parallel-size={tp}"
            )
        if arch.num_query_groups % tp:
            raise ConfigError(
                f"num_query_groups={arch.num_query_groups} (KV heads) of model "
                f"{self.model!r} is not divisible by tensor-model-parallel-size={tp}"
            )
        split_pipeline_layers(
            arch.num_layers,
            pp,
            par.decoder_first_pipeline_num_layers,
            par.decoder_last_pipeline_num_layers,
        )
        if train.global_batch_size % (train.micro_batch_size * dp):
            raise ConfigError(
                f"global-batch-size={train.global_batch_size} is not divisible by "
                f"micro-batch-size={train.micro_batch_size} x data-parallel-size={dp}"
            )
        if train.seq_length > arch.max_position_embeddings:
            raise ConfigError(
                f"seq-length={train.seq_length} exceeds max_position_embeddings="
                f"{arch.max_position_embeddings} of model {self.model!r}"
            )
        cp = par.context_parallel_size
        if cp > 1 and train.attention_backend not in ("auto", "transformer_engine"):
            raise ConfigError(
                f"context-parallel-size={cp} needs --attention-backend transformer_engine "
                f"(got {train.attention_backend})"
            )
        if cp > 1 and train.seq_length % (2 * cp):
            raise ConfigError(
                f"seq-length={train.seq_length} is not divisible by 2 x "
                f"context-parallel-size={cp} (load-balanced causal CP)"
            )
        if par.sequence_parallel and train.seq_length % tp:
            raise ConfigError(
                f"seq-length={train.seq_length} is not divisible by "
                f"tensor-model-parallel-size={tp} (needed by --sequence-parallel)"
            )
        self.performance.check_layout(
            tensor_model_parallel_size=tp,
            sequence_parallel=par.sequence_parallel,
            use_distributed_optimizer=par.use_distributed_optimizer,
            recompute_granularity=train.recompute_granularity,
        )

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per data-parallel rank per iteration."""
        return self.train.global_batch_size // (
            self.train.micro_batch_size * self.parallel.data_parallel_size
        )

    @property
    def pipeline_layers(self) -> tuple[int | None, int | None]:
        """(first, last) stage layer counts for megatron-core; ``None`` for an even split."""
        return split_pipeline_layers(
            self.arch.num_layers,
            self.parallel.pipeline_model_parallel_size,
            self.parallel.decoder_first_pipeline_num_layers,
            self.parallel.decoder_last_pipeline_num_layers,
        )
