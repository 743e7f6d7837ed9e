"""Run recipes: per-size training defaults, and stages derived from them by small functions.

Peak LR and global batch per size are the paper's Table 2 (batch in sequences of 4096 tokens);
warm-up is 2000 iterations and the schedule three-stage (§3.4). A flag given on the command line
always wins over the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Defaults a size brings to a pretraining run."""

    lr: float
    global_batch_size: int
    lr_warmup_iters: int = 2000
    lr_decay_style: str = "three-stage"
    min_lr: float = 0.0


PRETRAIN: dict[str, Recipe] = {
    "debug": Recipe(lr=3e-3, global_batch_size=8, lr_warmup_iters=0),
    "1.3b": Recipe(lr=5.3e-4, global_batch_size=1024),
    "6.7b": Recipe(lr=4.2e-4, global_batch_size=2304),
    "33b": Recipe(lr=3.5e-4, global_batch_size=3840),
}
FALLBACK = Recipe(lr=3e-4, global_batch_size=8, lr_warmup_iters=0)
"""For checkpoint-defined architectures (``--load`` without ``--model``)."""


def pretrain_recipe(model: str | None) -> Recipe:
    """The 4K-stage defaults of a registry size."""
    return PRETRAIN.get(model or "", FALLBACK)
