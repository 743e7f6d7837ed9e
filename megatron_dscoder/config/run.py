"""Run configuration: small dataclasses that validate themselves before any process-group work.

A bad layout (heads not divisible by TP, a batch that does not split over data parallelism, ...)
fails here, in the launching process, with a message that names the values, instead of as a hang
or an assert deep inside megatron-core on one rank of a 256-GPU job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from megatron_dscoder.model.registry import ModelArch


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending values."""


ATTENTION_BACKENDS = ("auto", "transformer_engine", "flash", "sdpa", "unfused")
"""``--attention-backend`` choices (``megatron_dscoder.model.attention``); ``auto`` picks
Transformer Engine when it and CUDA are present, else ``sdpa``."""


def split_pipeline_layers(
    num_layers: int, pp: int, first: int | None = None, last: int | None = None
) -> tuple[int | None, int | None]:
    """Layers on the first and last pipeline stage (``None`` = even split).

    When ``num_layers`` does not divide evenly, the middle stages take ``ceil(L / pp)`` layers and
    the first and last stages (which also hold the embedding and the output layer + loss) share the
    rest: 62 layers over PP=4 -> 15, 16, 16, 15.
    """
    if pp == 1:
        if first is not None or last is not None:
            raise ConfigError("first/last pipeline stage layer counts need pipeline parallelism")
        return None, None
    if first is None and last is None:
        if num_layers % pp == 0:
            return None, None
        if pp == 2:
            raise ConfigError(
                f"num_layers={num_layers} cannot be split over pipeline-model-parallel-size={pp}"
            )
        per_stage = math.ceil(num_layers / pp)
        rest = num_layers - per_stage * (pp - 2)
        first, last = rest // 2, rest - rest // 2
        if first < 1:
            raise ConfigError(
                f"num_layers={num_layers} is too few for pipeline-model-parallel-size={pp}"
            )
        return first, last
    first = first if first is not None else 0
    last = last if last is not None else 0
    middle_stages = pp - (first > 0) - (last > 0)
    middle_layers = num_layers - first - last
    if middle_layers < 0 or (middle_stages and middle_layers % middle_stages):
        raise ConfigError(
            f"num_layers={num_layers} with {first} on the first and {last} on the last stage "
            f"leaves {middle_layers} layers for {middle_stages} stages of "
            f"pipeline-model-parallel-size={pp}"
        )
    return first or None, last or None


@dataclass(kw_only=True)
class ParallelConfig:
    """How the model and the batch are split over ``world_size`` processes."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    sequence_parallel: bool = False
    context_parallel_size: int = 1
    """Sequence sharding over GPUs for long contexts (megatron-core CP; Transformer Engine)."""
    use_distributed_optimizer: bool = False
    decoder_first_pipeline_num_layers: int | None = None
    decoder_last_pipeline_num_layers: int | None = None
    world_size: int = 1

    def __post_init__(self) -> None:
        tp, pp, cp = (
            self.tensor_model_parallel_size,
            self.pipeline_model_parallel_size,
            self.context_parallel_size,
        )
        if min(tp, pp, cp) < 1:
            raise ConfigError(f"parallel sizes must be >= 1 (TP={tp}, PP={pp}, CP={cp})")
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
        """Replicas of the model: ``world_size / (TP * PP)``."""
        return self.world_size // (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )


@dataclass(kw_only=True)
class TrainConfig:
    """Batch geometry, horizon and optimiser settings."""

    micro_batch_size: int = 1
    global_batch_size: int = 8
    seq_length: int = 4096
    train_iters: int = 10
    lr: float = 3e-4
    min_lr: float = 0.0
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    seed: int = 1234
    lr_decay_style: str = "three-stage"
    lr_warmup_iters: int = 0
    recompute_granularity: str | None = None
    """``full`` or ``selective`` (megatron-core's activation recomputation)."""
    recompute_method: str | None = None
    """``uniform`` or ``block`` (with ``full``)."""
    recompute_num_layers: int | None = None
    max_nonfinite_iters: int = 10
    """Consecutive NaN/inf losses (each update skipped) after which the run stops."""
    exit_interval: int | None = None
    """Stop (after a checkpoint, with ``--save``) once the iteration is a multiple of this."""
    inject_nonfinite_loss_iters: tuple[int, ...] = ()
    """Fault injection for tests: these iterations get a NaN loss (and NaN gradients)."""

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "global_batch_size", "seq_length", "train_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.recompute_granularity not in (None, "full", "selective"):
            raise ConfigError(
                f"recompute-granularity={self.recompute_granularity!r}: choose full or selective"
            )
        if self.recompute_method not in (None, "uniform", "block"):
            raise ConfigError(
                f"recompute-method={self.recompute_method!r}: choose uniform or block"
            )
        if self.recompute_granularity == "full" and self.recompute_method is None:
            raise ConfigError("recompute-granularity=full needs --recompute-method uniform|block")
        if not 0 <= self.lr_warmup_iters <= self.train_iters:
            raise ConfigError(
                f"lr-warmup-iters={self.lr_warmup_iters} must be within "
                f"[0, train-iters={self.train_iters}]"
            )


@dataclass(kw_only=True)
class DataConfig:
    """Where samples come from: mock tokens, or Megatron ``.bin``/``.idx`` blends."""

    mock_data: bool = False
    data_path: list[str] | None = None
    split: str = "99,1,0"
    data_cache_path: str | None = None
    tokenizer_model: str | None = None
    num_workers: int | None = None
    """DataLoader processes; default 2 on GPU, 0 (inline, <1 % of a step) on CPU, where worker
    processes would compete with training for the cores."""

    def __post_init__(self) -> None:
        if self.mock_data == bool(self.data_path):
            raise ConfigError("give exactly one of --mock-data and --data-path")
        if self.data_path and not self.tokenizer_model:
            raise ConfigError("--data-path needs --tokenizer-model DIR (an HF tokenizer directory)")


@dataclass(kw_only=True)
class CheckpointConfig:
    """Sharded checkpoints (megatron-core dist_checkpointing, torch_dist)."""

    save: str | None = None
    save_interval: int | None = None
    load: str | None = None
    finetune: bool = False
    """Load weights only; reset iteration, samples, optimizer and schedule."""
    no_load_optim: bool = False
    no_load_rng: bool = False
    keep_checkpoints: int | None = None
    """Keep only the newest K complete checkpoints (None keeps all)."""

    def __post_init__(self) -> None:
        if self.save_interval is not None and (self.save is None or self.save_interval < 1):
            raise ConfigError(
                f"--save-interval {self.save_interval} needs --save DIR and a positive interval"
            )
        if self.finetune and self.load is None:
            raise ConfigError("--finetune needs --load DIR")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ConfigError(f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}")


@dataclass(kw_only=True)
class LoggingConfig:
    """What is reported, how often, and where."""

    log_interval: int = 1
    eval_interval: int | None = None
    eval_iters: int = 1
    metrics_jsonl: str | None = None
    tensorboard_dir: str | None = None
    wandb_project: str | None = None
    wandb_exp_name: str | None = None
    wandb_save_dir: str | None = None
    peak_tflops: float | None = None
    """Per-device peak for MFU; default: the GPU's dense bf16 peak where known."""

    def __post_init__(self) -> None:
        if self.log_interval < 1:
            raise ConfigError(f"--log-interval must be >= 1, got {self.log_interval}")
        if self.eval_interval is not None and (self.eval_interval < 1 or self.eval_iters < 1):
            raise ConfigError(
                f"--eval-interval {self.eval_interval} / --eval-iters "
                f"{self.eval_iters} must be >= 1"
            )


@dataclass(kw_only=True)
class RunConfig:
    """Everything one pretraining run needs; :meth:`validate` checks the combination."""

    model: str | None
    """Registry name; None for a checkpoint-defined architecture (e.g. imported from HF)."""
    arch: ModelArch
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(mock_data=True))
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    attention_backend: str = "auto"
    """Core attention; not part of the checkpoint (every backend has the same keys)."""

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
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ConfigError(
                f"attention-backend={self.attention_backend!r}: choose one of "
                f"{', '.join(ATTENTION_BACKENDS)}"
            )
        if cp > 1 and self.attention_backend not in ("auto", "transformer_engine"):
            raise ConfigError(
                f"context-parallel-size={cp} needs --attention-backend transformer_engine "
                f"(got {self.attention_backend})"
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
