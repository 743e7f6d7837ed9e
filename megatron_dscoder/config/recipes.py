"""Run recipes: per-size training defaults, and stages derived from them by small functions.

Peak LR and global batch per size are the paper's Table 2 (batch in sequences of 4096 tokens);
warm-up is 2000 iterations and the schedule three-stage (§3.4). A flag given on the command line
always wins over the recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Defaults a size brings to a pretraining run."""

    lr: float
    global_batch_size: int
    lr_warmup_iters: int = 2000
    lr_decay_style: str = "three-stage"
    min_lr: float = 0.0
    train_tokens: float = 1.8e12
    """The 4K stage's horizon: 1.8T of the 2T tokens (the rest is the 16K stage)."""

    def train_iters(self, seq_length: int = 4096) -> int:
        """Iterations that consume ``train_tokens`` (1.3b: 429,154; 33b: 114,441)."""
        return math.ceil(self.train_tokens / (self.global_batch_size * seq_length))


PRETRAIN: dict[str, Recipe] = {
    "debug": Recipe(lr=3e-3, global_batch_size=8, lr_warmup_iters=0, train_tokens=8 * 128 * 10),
    "debug-4k": Recipe(lr=3e-3, global_batch_size=8, lr_warmup_iters=0, train_tokens=8 * 4096 * 10),
    "1.3b": Recipe(lr=5.3e-4, global_batch_size=1024),
    "6.7b": Recipe(lr=4.2e-4, global_batch_size=2304),
    "33b": Recipe(lr=3.5e-4, global_batch_size=3840),
}
FALLBACK = Recipe(lr=3e-4, global_batch_size=8, lr_warmup_iters=0, train_tokens=8 * 4096 * 10)
"""For checkpoint-defined architectures (``--load`` without ``--model``)."""


def pretrain_recipe(model: str | None) -> Recipe:
    """The 4K-stage defaults of a registry size."""
    return PRETRAIN.get(model or "", FALLBACK)


@dataclass(frozen=True, kw_only=True)
class ContextExtension:
    """DeepSeek-Coder's 16K stage (§3.6), applied to a pretrained 4K model.

    RoPE base 10000 -> 100000 with linear position interpolation x4, sequences 4x longer,
    1000 iterations at global batch 512, the LR held at the final pretraining LR (the
    three-stage schedule ends at 10 % of the peak), weights loaded from the 4K checkpoint.
    """

    factor: int = 4
    rotary_base: int = 100000
    train_iters: int = 1000
    global_batch_size: int = 512
    lr_fraction_of_peak: float = 0.1


EXTEND_CONTEXT = ContextExtension()
STAGES = ("pretrain", "extend-context")


def extend_context_recipe(base: Recipe, model: str | None) -> Recipe:
    """The 16K stage's defaults derived from the 4K recipe (debug keeps its tiny batch)."""
    return Recipe(
        lr=base.lr * EXTEND_CONTEXT.lr_fraction_of_peak,
        global_batch_size=(
            base.global_batch_size
            if model in ("debug", "debug-4k")
            else EXTEND_CONTEXT.global_batch_size
        ),
        lr_warmup_iters=0,
        lr_decay_style="constant",
        min_lr=base.min_lr,
        train_tokens=EXTEND_CONTEXT.train_iters
        * EXTEND_CONTEXT.global_batch_size
        * 4096
        * EXTEND_CONTEXT.factor,
    )
