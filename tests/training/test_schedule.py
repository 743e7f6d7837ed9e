"""The LR schedules, exactly at their boundaries, and the per-group values megatron-core's
parameter groups ask for (its scheduler's contract: ``lr`` from the group's ``max_lr``/``min_lr``
times ``lr_mult``, ``weight_decay`` = base x ``wd_mult``)."""

import math

import pytest

from megatron_dscoder.training.schedule import LRSchedule


def test_three_stage_boundaries():
    s = LRSchedule(
        style="three-stage", peak_lr=1.0, warmup_iters=4, train_iters=100, weight_decay=0
    )
    assert [s.lr(i) for i in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 1.0]  # linear from 0
    assert s.lr(5) == 1.0 and s.lr(80) == 1.0  # peak held until 80 % of training
    assert s.lr(81) == pytest.approx(math.sqrt(0.1)) and s.lr(90) == pytest.approx(math.sqrt(0.1))
    assert s.lr(91) == pytest.approx(0.1) and s.lr(100) == pytest.approx(0.1)  # 10 % of peak


def test_cosine_decays_to_min_lr():
    s = LRSchedule(
        style="cosine", peak_lr=1.0, warmup_iters=10, train_iters=110, min_lr=0.1, weight_decay=0
    )
    assert s.lr(10) == 1.0
    assert s.lr(60) == pytest.approx(0.55)  # half-way: midpoint of peak and min
    assert s.lr(110) == pytest.approx(0.1)


def test_constant_holds_after_warmup():
    s = LRSchedule(style="constant", peak_lr=3e-5, warmup_iters=0, train_iters=5, weight_decay=0)
    assert {s.lr(i) for i in range(1, 6)} == {3e-5}


def test_bad_style_and_warmup():
    with pytest.raises(ValueError, match="lr-decay-style 'linear'"):
        LRSchedule(style="linear", peak_lr=1.0, warmup_iters=0, train_iters=5, weight_decay=0)
    with pytest.raises(ValueError, match="lr-warmup-iters=9"):
        LRSchedule(style="cosine", peak_lr=1.0, warmup_iters=9, train_iters=5, weight_decay=0)


def test_bad_weight_decay():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight-decay"):
            LRSchedule(
                style="constant", peak_lr=1.0, warmup_iters=0, train_iters=5, weight_decay=bad
            )


def test_apply_sets_every_group():
    """As megatron-core 0.16.1 builds them: the default group, the no-decay group of 1-D
    parameters (``wd_mult`` 0, ``weight_decay`` left at the base value), an empty group, and a
    group with its own LR range (the decoupled embedding LR) and multipliers."""

    class Opt:
        param_groups = [
            {"lr": 0.0, "weight_decay": 0.1, "wd_mult": 1.0, "lr_mult": 1.0, "max_lr": 2.0},
            {"lr": 0.0, "weight_decay": 0.1, "wd_mult": 0.0, "lr_mult": 1.0, "max_lr": 2.0},
            {"lr": 0.0, "weight_decay": 0.1, "params": []},
            {"lr": 0.0, "weight_decay": 0.1, "wd_mult": 0.5, "lr_mult": 0.5, "max_lr": 4.0},
        ]

    s = LRSchedule(
        style="three-stage", peak_lr=2.0, warmup_iters=2, train_iters=10, weight_decay=0.1
    )
    assert s.apply(Opt, 1) == 1.0
    assert [g["lr"] for g in Opt.param_groups] == [1.0, 1.0, 1.0, 1.0]  # 4.0 / 2 x 0.5
    assert [g["weight_decay"] for g in Opt.param_groups] == [0.1, 0.0, 0.1, 0.05]
    s.apply(Opt, 10)  # the last stage: 10 % of each group's own peak
    assert [g["lr"] for g in Opt.param_groups] == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert [g["weight_decay"] for g in Opt.param_groups] == [0.1, 0.0, 0.1, 0.05]  # no compounding


def test_cosine_uses_each_group_floor():
    s = LRSchedule(style="cosine", peak_lr=1.0, warmup_iters=0, train_iters=10, weight_decay=0)
    lr, _ = s.group_values({"max_lr": 2.0, "min_lr": 0.5}, 10)
    assert lr == pytest.approx(0.5) and s.lr(10) == pytest.approx(0.0)
