"""The optimizer's per-iteration hyper-parameters, as pure functions of the iteration (so resume
is exact by design): the learning rate of each parameter group and its weight decay.

``three-stage`` (DeepSeek-Coder §3.4, boundaries from DeepSeek LLM §2.3): linear warm-up from 0
over ``warmup_iters``, the peak held until 80 % of training, then x sqrt(1/10) until 90 %, then
x sqrt(1/10) again — 10 % of the peak — to the end. ``cosine``: warm-up, then cosine decay to
``min_lr``. ``constant``: warm-up, then the peak (the 16K stage holds the final pretraining LR).

This replaces Megatron-LM's ``OptimizerParamScheduler`` (which has no step schedule), so it must
also do that scheduler's other job. megatron-core builds its parameter groups with per-group
fields and leaves the scheduler to apply them at every step: biases and 1-D parameters (every
RMSNorm gain) sit in a group with ``wd_mult = 0.0`` but with ``weight_decay`` still at the base
value, so a schedule that set only ``lr`` would decay every norm gain. :meth:`LRSchedule.apply`
therefore sets, for each group, what megatron-core's scheduler sets:

- ``weight_decay = base x wd_mult`` (base: the group's ``end_wd`` if it has one, else
  ``--weight-decay``; the weight decay itself is constant, Megatron's ``--weight-decay-incr-style
  constant``);
- ``lr`` from the group's own ``max_lr``/``min_lr`` (megatron-core's decoupled embedding LR is
  carried that way), times ``lr_mult`` (1.0 in every group megatron-core 0.16.1 builds; honoured
  as earlier Megatron-LM schedulers did).

    >>> s = LRSchedule(
    ...     style="three-stage", peak_lr=1.0, warmup_iters=2, train_iters=10, weight_decay=0
    ... )
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
    """The LR of iteration ``i`` (1-based: the LR used by the i-th optimizer step) and the
    weight decay of every parameter group."""

    style: str
    peak_lr: float
    warmup_iters: int
    train_iters: int
    weight_decay: float
    """Base (decoupled, AdamW) weight decay; each group gets it times its ``wd_mult``."""
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
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight-decay must be finite and >= 0, got {self.weight_decay}")

    def lr(
        self, iteration: int, peak_lr: float | None = None, min_lr: float | None = None
    ) -> float:
        """Learning rate for the ``iteration``-th update; ``peak_lr``/``min_lr`` default to the
        schedule's (a parameter group with its own ``max_lr``/``min_lr`` passes them)."""
        peak = self.peak_lr if peak_lr is None else peak_lr
        floor = self.min_lr if min_lr is None else min_lr
        if iteration <= self.warmup_iters:
            return peak * iteration / self.warmup_iters
        if self.style == "constant":
            return peak
        progress = iteration / self.train_iters
        if self.style == "three-stage":
            first, second = self.stage_boundaries
            if progress <= first:
                return peak
            if progress <= second:
                return peak * STAGE_FACTOR
            return peak * STAGE_FACTOR**2
        decay = (iteration - self.warmup_iters) / max(self.train_iters - self.warmup_iters, 1)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(decay, 1.0)))
        return floor + (peak - floor) * cosine

    def group_values(self, group: dict, iteration: int) -> tuple[float, float]:
        """(lr, weight_decay) of one megatron-core parameter group for ``iteration``."""
        lr = self.lr(iteration, group.get("max_lr"), group.get("min_lr"))
        wd = group.get("end_wd", self.weight_decay)
        return lr * group.get("lr_mult", 1.0), wd * group.get("wd_mult", 1.0)

    def apply(self, optimizer, iteration: int) -> float:
        """Set the LR and weight decay of every parameter group for ``iteration`` (empty groups
        too, as megatron-core's scheduler does); returns the schedule's base LR (the value of
        every group without its own LR override), for logging."""
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = self.group_values(group, iteration)
        return self.lr(iteration)
