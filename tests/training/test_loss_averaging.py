"""The loss is a per-token mean over the global batch, masked tokens excluded (Megatron-LM's
``calculate_per_token_loss``), whatever the micro-batch size and data parallelism.

Every sample keeps the loss on a different number of tokens (1 to 64 of 64). Cutting the same
global batch of 4 into 4 micro-batches, over 2 data-parallel ranks, or into 1 micro-batch must
give the same loss and gradient norm at every step; a mean of per-micro-batch means would not
(the single-micro-batch run is the per-token mean by definition, the others would weight a
sample with 1 loss token like one with 64).
"""

from __future__ import annotations

import pytest

from tests.launch import WORKERS, read_jsonl, torchrun

BASE = (
    "--model debug --mock-data --train-iters 2 --global-batch-size 4 --seq-length 64 "
    "--lr 0.003 --lr-warmup-iters 0 --lr-decay-style constant"
)
LAYOUTS = {
    "dp2_mbs1": "--micro-batch-size 1",
    "tp2_mbs1": "--tensor-model-parallel-size 2 --micro-batch-size 1",
    "tp2_mbs4": "--tensor-model-parallel-size 2 --micro-batch-size 4",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("masked_loss")
    args = []
    for name, flags in LAYOUTS.items():
        args += [name, f"{BASE} {flags}"]
    torchrun(2, WORKERS / "masked_loss.py", str(out), *args)
    return {
        name: [r for r in read_jsonl(out / f"{name}.jsonl") if "lm_loss" in r] for name in LAYOUTS
    }


@pytest.mark.parametrize("name", [n for n in LAYOUTS if n != "tp2_mbs4"])
def test_loss_and_norm_do_not_depend_on_the_micro_batch_cut(runs, name):
    whole = runs["tp2_mbs4"]  # one micro-batch: the per-token mean over the global batch
    assert len(runs[name]) == len(whole) == 2
    for got, want in zip(runs[name], whole, strict=True):
        assert got["lm_loss"] == pytest.approx(want["lm_loss"], rel=2e-6), (name, got, want)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=2e-5), (name, got, want)
