"""Weight decay reaches exactly the parameters Megatron-LM decays (the matrices), never the
RMSNorm gains, on the plain and the distributed optimizer path.

megatron-core gives 1-D parameters and biases ``wd_mult = 0.0`` but leaves their group's
``weight_decay`` at the base value; the schedule must apply the multiplier. The check is one real
update of the debug model at DP=2, run with weight decay 0.1 and with 0.0 from the same weights
and batch: the gradients are then identical, so every norm gain must land on the same value in
both runs (AdamW without decay), and every matrix must differ by exactly ``lr x wd x before``
(torch's decoupled decay ``p <- p (1 - lr wd)`` before the Adam step).
"""

from __future__ import annotations

import pytest
import torch

from tests.launch import WORKERS, torchrun

LR, WD = 0.01, 0.1
FLAGS = (
    "--model debug --mock-data --train-iters 1 --global-batch-size 4 --seq-length 32 "
    f"--lr {LR} --lr-warmup-iters 0 --lr-decay-style constant --clip-grad 1.0"
)
LAYOUTS = {"plain": "", "distopt": "--use-distributed-optimizer"}


@pytest.fixture(scope="module")
def updates(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("first_update")
    args = []
    for layout, extra in LAYOUTS.items():
        for wd in (WD, 0.0):
            args += [f"{layout}_wd{wd}", f"{FLAGS} {extra} --weight-decay {wd}"]
    torchrun(2, WORKERS / "first_update.py", str(out), *args)
    return {name: torch.load(out / f"{name}.pt", weights_only=True) for name in (args[0::2])}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_norm_gains_move_as_adamw_without_decay(updates, layout):
    decayed, plain = updates[f"{layout}_wd{WD}"]["params"], updates[f"{layout}_wd0.0"]["params"]
    ones = [n for n, (before, _) in decayed.items() if before.dim() == 1]
    assert ones and all("norm" in n for n in ones), ones  # the model's 1-D parameters: norm gains
    for name in ones:
        (b_wd, a_wd), (b_0, a_0) = decayed[name], plain[name]
        assert torch.equal(b_wd, b_0), name  # same start
        assert not torch.equal(a_wd, b_wd), name  # it was updated
        assert torch.equal(a_wd, a_0), (name, (a_wd - a_0).abs().max().item())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matrices_decay_by_lr_times_wd(updates, layout):
    decayed, plain = updates[f"{layout}_wd{WD}"]["params"], updates[f"{layout}_wd0.0"]["params"]
    matrices = [n for n, (before, _) in decayed.items() if before.dim() > 1]
    assert len(matrices) >= 4, matrices
    for name in matrices:
        (before, a_wd), (_, a_0) = decayed[name], plain[name]
        torch.testing.assert_close(a_wd - a_0, -LR * WD * before, rtol=0, atol=2e-8, msg=name)


def test_groups_carry_the_applied_decay(updates):
    """The plain optimizer's groups: matrices at the base decay, norm gains at zero."""
    for wd in (WD, 0.0):
        groups = [g for g in updates[f"plain_wd{wd}"]["groups"] if g["params"]]
        assert {g["wd_mult"] for g in groups} == {0.0, 1.0}
        for g in groups:
            assert g["weight_decay"] == pytest.approx(wd * g["wd_mult"]) and g["lr"] == LR
