"""The 16K stage as a recipe, scaled down for CPU: debug model, 64-token 4K stage -> 256 tokens."""

from __future__ import annotations

import json

import pytest

from tests.launch import read_jsonl
from tests.training.test_faults import run_cases

BASE = "--model debug --mock-data --global-batch-size 4 --seed 3"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extend")
    s4, s16 = tmp / "ckpt4k", tmp / "ckpt16k"
    results = run_cases(
        tmp,
        {
            "pretrain": f"{BASE} --seq-length 64 --train-iters 6 --save {s4} "
            f"--metrics-jsonl {tmp / 'pretrain.jsonl'}",
            "extend": f"{BASE} --stage extend-context --load {s4} --save {s16} --seq-length 256 "
            f"--train-iters 3 --metrics-jsonl {tmp / 'extend.jsonl'}",
            "extend_more": f"{BASE} --stage extend-context --load {s4} --save {s16} "
            f"--seq-length 256 --train-iters 5 --metrics-jsonl {tmp / 'more.jsonl'}",
        },
    )
    assert all(r["status"] == "ok" for r in results.values()), results
    return tmp


def test_recipe_is_applied(stage):
    meta = json.loads((stage / "ckpt16k" / "iter_0000003" / "run_config.json").read_text())
    arch, train = meta["arch"], meta["train"]
    assert (
        arch["rotary_base"],
        arch["seq_len_interpolation_factor"],
        arch["max_position_embeddings"],
    ) == (100000, 4.0, 512)
    assert train["seq_length"] == 256 and train["lr_decay_style"] == "constant"
    assert train["lr"] == pytest.approx(0.1 * 3e-3)  # the final LR of the 4K three-stage run
    lrs = [r["lr"] for r in read_jsonl(stage / "extend.jsonl")]
    assert lrs == pytest.approx([3e-4] * 3)


def test_starts_from_the_4k_weights(stage):
    extend = read_jsonl(stage / "extend.jsonl")
    pretrain = read_jsonl(stage / "pretrain.jsonl")
    assert [r["iteration"] for r in extend] == [1, 2, 3]  # counters reset (weights only)
    # A random model starts near ln(vocab); the extension starts from the trained weights.
    assert extend[0]["lm_loss"] < pretrain[0]["lm_loss"] - 0.3


def test_interrupted_stage_resumes_from_its_own_checkpoints(stage):
    more = read_jsonl(stage / "more.jsonl")
    assert [r["iteration"] for r in more] == [4, 5]
