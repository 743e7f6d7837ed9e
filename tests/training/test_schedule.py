"""The LR schedules, exactly at their boundaries."""

import math

import pytest

from megatron_dscoder.training.schedule import LRSchedule


def test_three_stage_boundaries():
    s = LRSchedule(style="three-stage", peak_lr=1.0, warmup_iters=4, train_iters=100)
    assert [s.lr(i) for i in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 1.0]  # linear from 0
    assert s.lr(5) == 1.0 and s.lr(80) == 1.0  # peak held until 80 % of training
    assert s.lr(81) == pytest.approx(math.sqrt(0.1)) and s.lr(90) == pytest.approx(math.sqrt(0.1))
    assert s.lr(91) == pytest.approx(0.1) and s.lr(100) == pytest.approx(0.1)  # 10 % of peak


def test_cosine_decays_to_min_lr():
    s = LRSchedule(style="cosine", peak_lr=1.0, warmup_iters=10, train_iters=110, min_lr=0.1)
    assert s.lr(10) == 1.0
    assert s.lr(60) == pytest.approx(0.55)  # half-way: midpoint of peak and min
    assert s.lr(110) == pytest.approx(0.1)


def test_constant_holds_after_warmup():
    s = LRSchedule(style="constant", peak_lr=3e-5, warmup_iters=0, train_iters=5)
    assert {s.lr(i) for i in range(1, 6)} == {3e-5}


def test_bad_style_and_warmup():
    with pytest.raises(ValueError, match="lr-decay-style 'linear'"):
        LRSchedule(style="linear", peak_lr=1.0, warmup_iters=0, train_iters=5)
    with pytest.raises(ValueError, match="lr-warmup-iters=9"):
        LRSchedule(style="cosine", peak_lr=1.0, warmup_iters=9, train_iters=5)


def test_apply_sets_every_group():
    class Opt:
        param_groups = [{"lr": 0.0}, {"lr": 0.0}]

    s = LRSchedule(style="three-stage", peak_lr=2.0, warmup_iters=2, train_iters=10)
    assert s.apply(Opt, 1) == 1.0 and [g["lr"] for g in Opt.param_groups] == [1.0, 1.0]
