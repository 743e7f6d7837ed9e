"""Recipes: functions that return a complete :class:`RunConfig`, and stages built from them.

    run = extend_context(pretrain("6.7b"))      # the 16K stage of the 6.7B model

Peak LR and global batch per size are the paper's Table 2 (batch in sequences of 4096 tokens);
warm-up is 2000 iterations and the schedule three-stage (§3.4) over 1.8T of the 2T tokens. The
command line changes a recipe only through :func:`megatron_dscoder.config.cli.override`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from megatron_dscoder.config.run import RunConfig, TrainConfig
from megatron_dscoder.model.registry import MODELS, ModelArch, get_model, with_long_context


@dataclass(frozen=True)
class SizeDefaults:
    """What a size brings to its 4K pretraining run."""

    lr: float
    global_batch_size: int
    lr_warmup_iters: int = 2000
    train_tokens: float | None = 1.8e12
    """The 4K stage's horizon: 1.8T of the 2T tokens (the rest is the 16K stage)."""
    train_iters: int | None = None
    """A fixed horizon instead of ``train_tokens``."""


SIZES: dict[str, SizeDefaults] = {
    # Ten iterations of 8 x 128 tokens: a CPU toy run.
    "debug": SizeDefaults(lr=3e-3, global_batch_size=8, lr_warmup_iters=0, train_tokens=10240),
    # The debug model at the real sizes' 4,096 positions: the 16K stage at its real length.
    "debug-4k": SizeDefaults(lr=3e-3, global_batch_size=8, lr_warmup_iters=0, train_tokens=327680),
    "1.3b": SizeDefaults(lr=5.3e-4, global_batch_size=1024),
    "6.7b": SizeDefaults(lr=4.2e-4, global_batch_size=2304),
    "33b": SizeDefaults(lr=3.5e-4, global_batch_size=3840),
    # DeepSeek-LLM-7B's own pretraining (DeepSeek LLM Table 2: batch 2304, LR 4.2e-4, 2T
    # tokens); ``--stage continue-pretrain`` turns it into DeepSeek-Coder-v1.5's run.
    "7b-v1.5": SizeDefaults(lr=4.2e-4, global_batch_size=2304, train_tokens=2e12),
}
UNREGISTERED = SizeDefaults(lr=3e-4, global_batch_size=8, lr_warmup_iters=0, train_tokens=None,
                            train_iters=10)  # fmt: skip
"""For a checkpoint whose architecture is no registry size (e.g. another Llama imported from
Hugging Face): a short fine-tune unless ``--lr``, ``--global-batch-size``, ``--train-iters`` say
otherwise."""
STAGES = ("pretrain", "extend-context", "sft", "continue-pretrain")


def pretrain(model: str) -> RunConfig:
    """The 4K pretraining run of a registry size (``KeyError`` names the known sizes)."""
    if model not in SIZES:
        raise KeyError(f"unknown model {model!r}; known models: {', '.join(SIZES)}")
    return for_arch(get_model(model), SIZES[model], model=model)


def for_arch(arch: ModelArch, size: SizeDefaults, *, model: str | None = None) -> RunConfig:
    """A run of ``arch`` with a size's defaults: sequences of the model's full length, mock data
    until the command line names a corpus."""
    return RunConfig(
        model=model,
        arch=arch,
        train=TrainConfig(seq_length=arch.max_position_embeddings, **dataclasses.asdict(size)),
    )


@dataclass(frozen=True, kw_only=True)
class ContextExtension:
    """DeepSeek-Coder's 16K stage (§3.6), applied to a pretrained 4K model.

    RoPE base 10000 -> 100000 with linear position interpolation x4, sequences 4x longer,
    1000 iterations at global batch 512 (never more than the 4K stage's batch: the debug model
    keeps its 8), the LR held at the final pretraining LR (the three-stage schedule ends at 10 %
    of the peak), weights loaded from the 4K checkpoint.
    """

    factor: int = 4
    rotary_base: int = 100000
    train_iters: int = 1000
    global_batch_size: int = 512
    lr_fraction_of_peak: float = 0.1


EXTEND_CONTEXT = ContextExtension()


def extend_context(run: RunConfig, stage: ContextExtension = EXTEND_CONTEXT) -> RunConfig:
    """The 16K stage derived from a 4K run: long-context RoPE, 4x sequences, weights-only load."""
    arch = run.arch
    if arch.seq_len_interpolation_factor is None:  # a 4K model (not an already-extended one)
        arch = with_long_context(arch, stage.factor, stage.rotary_base)
    train = dataclasses.replace(
        run.train,
        seq_length=run.train.seq_length * stage.factor,
        global_batch_size=min(stage.global_batch_size, run.train.global_batch_size),
        train_iters=stage.train_iters,
        train_tokens=None,
        lr=run.train.lr * stage.lr_fraction_of_peak,
        lr_decay_style="constant",
        lr_warmup_iters=0,
    )
    checkpoint = dataclasses.replace(run.checkpoint, finetune=True)
    return dataclasses.replace(run, arch=arch, train=train, checkpoint=checkpoint)


@dataclass(frozen=True, kw_only=True)
class InstructTuning:
    """DeepSeek-Coder-Instruct's fine-tuning (§3.7): peak LR 1e-5, 100 warm-up iterations, cosine
    decay, batches of ~4M tokens (1024 sequences of 4096; never more than the run's own batch:
    the debug model keeps its 8), 2B tokens (500 iterations), weights loaded from the base model,
    the loss on responses only (packed ``dscoder-preprocess-sft`` data)."""

    lr: float = 1e-5
    lr_warmup_iters: int = 100
    batch_tokens: int = 4 * 1024 * 1024
    train_tokens: float = 2e9


INSTRUCT = InstructTuning()


def sft(run: RunConfig, stage: InstructTuning = INSTRUCT) -> RunConfig:
    """The instruct stage derived from a base run: same model and sequence length."""
    batch = min(max(stage.batch_tokens // run.train.seq_length, 1), run.train.global_batch_size)
    train = dataclasses.replace(
        run.train,
        global_batch_size=batch,
        train_iters=None,
        train_tokens=stage.train_tokens,
        lr=stage.lr,
        min_lr=0.0,
        lr_decay_style="cosine",
        lr_warmup_iters=stage.lr_warmup_iters,
    )
    checkpoint = dataclasses.replace(run.checkpoint, finetune=True)
    data = dataclasses.replace(run.data, sft=True)
    return dataclasses.replace(run, train=train, checkpoint=checkpoint, data=data)


@dataclass(frozen=True, kw_only=True)
class ContinuedPretraining:
    """DeepSeek-Coder-v1.5 (paper §5): DeepSeek-LLM-7B-Base continued on 2T tokens of
    next-token prediction (no FIM) at 4K, the data mix of :data:`V15_DATA_MIX`.

    The paper gives the horizon, the context and the objective only. Assumed, each a flag:
    the peak LR and batch are DeepSeek-LLM-7B's own (``--lr 4.2e-4``, ``--global-batch-size
    2304``), with DeepSeek's 2000 warm-up iterations (``--lr-warmup-iters``) and three-stage
    decay (``--lr-decay-style``). Weights load from the imported base model (``--finetune``)."""

    train_tokens: float = 2e12
    seq_length: int = 4096
    lr: float = 4.2e-4
    global_batch_size: int = 2304
    lr_warmup_iters: int = 2000
    lr_decay_style: str = "three-stage"


CONTINUE_V15 = ContinuedPretraining()
#: The paper's §5 data mix as a blend template: (weight, what the prefix must hold). Prefixes
#: preprocessed with ``--fim-rate 0``; ``examples/continue_v15_7b.sh`` fills in the paths.
V15_DATA_MIX: tuple[tuple[float, str], ...] = (
    (0.70, "source code"),
    (0.10, "Markdown and StackExchange"),
    (0.07, "natural language related to code"),
    (0.07, "natural language related to math"),
    (0.06, "bilingual (Chinese-English) natural language"),
)


def continue_pretrain(run: RunConfig, stage: ContinuedPretraining = CONTINUE_V15) -> RunConfig:
    """DeepSeek-Coder-v1.5's run from a base model's (a registry size or an imported one):
    4K sequences, next-token prediction, 2T tokens, weights-only load."""
    seq = min(stage.seq_length, run.arch.max_position_embeddings)
    train = dataclasses.replace(
        run.train,
        seq_length=seq,
        global_batch_size=stage.global_batch_size,
        train_iters=None,
        train_tokens=stage.train_tokens,
        lr=stage.lr,
        lr_warmup_iters=stage.lr_warmup_iters,
        lr_decay_style=stage.lr_decay_style,
    )
    checkpoint = dataclasses.replace(run.checkpoint, finetune=True)
    return dataclasses.replace(run, train=train, checkpoint=checkpoint)


assert set(SIZES) == set(MODELS), "every registry size has a recipe"
