"""Learning-rate schedules, as pure functions of the iteration (so resume is exact by design).

``three-stage`` (DeepSeek-Coder §3.4, boundaries from DeepSeek LLM §2.3): linear warm-up from 0
over ``warmup_iters``, the peak held until 80 % of training, then x sqrt(1/10) until 90 %, then
x sqrt(1/10) again — 10 % of the peak — to the end. ``cosine``: warm-up, then cosine decay to
``min_lr``. ``constant``: warm-up, then the peak (the 16K stage holds the final pretraining LR).

    >>> s = LRSchedule("three-stage", peak_lr=1.0, warmup_iters=2, train_iters=10)
    >>> [round(s.lr(i), 4) for i in (1, 2, 8, 9, 10)]
    [0.5, 1.0, 1.0, 0.3162, 0.1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STYLES = ("three-stage", "cosine", "constant")
STAGE_FACTOR = math.sqrt(0.1)


@dataclass(frozen=True, kw_only=True)
class LRSchedule:
    """The LR of iteration ``i`` (1-based: the LR used by the i-th optimizer step)."""

    style: str
    peak_lr: float
    warmup_iters: int
    train_iters: int
    min_lr: float = 0.0
    stage_boundaries: tuple[float, float] = (0.8, 0.9)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"lr-decay-style {self.style!r}: choose one of {', '.join(STYLES)}")
        if self.warmup_iters < 0 or self.warmup_iters > self.train_iters:
            raise ValueError(
                f"lr-warmup-iters={self.warmup_iters} must be within "
                f"[0, train-iters={self.train_iters}]"
            )

    def lr(self, iteration: int) -> float:
        """Learning rate for the ``iteration``-th update."""
        if iteration <= self.warmup_iters:
            return self.peak_lr * iteration / self.warmup_iters
        if self.style == "constant":
            return self.peak_lr
        progress = iteration / self.train_iters
        if self.style == "three-stage":
            first, second = self.stage_boundaries
            if progress <= first:
                return self.peak_lr
            if progress <= second:
                return self.peak_lr * STAGE_FACTOR
            return self.peak_lr * STAGE_FACTOR**2
        decay = (iteration - self.warmup_iters) / max(self.train_iters - self.warmup_iters, 1)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(decay, 1.0)))
        return self.min_lr + (self.peak_lr - self.min_lr) * cosine

    def apply(self, optimizer, iteration: int) -> float:  # noqa: ANN001 - any torch-like optimizer
        """Set the LR of every parameter group for ``iteration``; returns it."""
        value = self.lr(iteration)
        for group in optimizer.param_groups:
            group["lr"] = value
        return value
