"""Real data through megatron-core's GPTDataset blend, and the metric sinks users watch.

One 2-rank (DP=2) run trains on a weighted blend of two ``.bin``/``.idx`` prefixes with a
train/valid split and a shared index cache, evaluates, and logs to JSONL, TensorBoard and an
offline W&B run; the three sinks must hold the same series.
"""

from __future__ import annotations

import math

import pytest

from megatron_dscoder.data.blend import parse_blend
from megatron_dscoder.datasets.gpt import DataError, MicroBatchSampler
from tests.launch import WORKERS, read_jsonl, torchrun
from tests.wandb_reader import history

SERIES = ("lm_loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_gpu")


@pytest.fixture(scope="module")
def blend_run(tmp_path_factory, token_corpus):
    out = tmp_path_factory.mktemp("blend")
    c = token_corpus
    flags = (
        f"--model debug --seq-length 64 --global-batch-size 8 --micro-batch-size 2 "
        f"--train-iters 12 --lr 3e-3 --lr-warmup-iters 2 --tokenizer-model {c['tokenizer']} "
        f"--data-path 0.7 {c['code']} 0.3 {c['prose']} --split 90,10,0 "
        f"--data-cache-path {out / 'cache'} --eval-interval 6 --eval-iters 2 "
        f"--tensorboard-dir {out / 'tb'} --wandb-project dscoder-test "
        f"--wandb-exp-name blend --wandb-save-dir {out / 'wb'} --save {out / 'ckpt'}"
    )
    torchrun(
        2,
        WORKERS / "layouts.py",
        str(out),
        "blend",
        flags,
        env={"WANDB_MODE": None, "WANDB_API_KEY": None},
    )  # no credentials: offline
    return out


def test_blend_trains_and_evaluates(blend_run):
    records = read_jsonl(blend_run / "blend.jsonl")
    train = [r for r in records if "lm_loss" in r]
    assert [r["iteration"] for r in train] == list(range(1, 13))
    assert train[-1]["lm_loss"] < train[0]["lm_loss"] - 1.0
    evals = [r for r in records if "val_loss" in r]
    assert [r["iteration"] for r in evals] == [6, 12]
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"])) for r in evals)
    assert train[-1]["consumed_tokens"] == 12 * 8 * 64


def test_index_cache_is_built_once_and_reused(blend_run):
    cached = sorted(p.name for p in (blend_run / "cache").rglob("*.npy"))
    assert any("document_index" in n for n in cached) and any("shuffle_index" in n for n in cached)
    # one set of files per (dataset, split): two prefixes x (train, valid) + the blend
    assert len([n for n in cached if n.endswith("document_index.npy")]) == 4


def test_tensorboard_holds_the_series(blend_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(blend_run / "tb"))
    acc.Reload()
    train = {r["iteration"]: r for r in read_jsonl(blend_run / "blend.jsonl") if "lm_loss" in r}
    for key in SERIES:
        events = acc.Scalars(key)
        assert [e.step for e in events] == sorted(train)
        for e in events:
            assert e.value == pytest.approx(train[e.step][key], rel=1e-6)
    assert [e.step for e in acc.Scalars("val_loss")] == [6, 12]


def test_wandb_offline_run_holds_the_series(blend_run):
    rows = [r for r in history(blend_run / "wb") if "lm_loss" in r]
    train = {r["iteration"]: r for r in read_jsonl(blend_run / "blend.jsonl") if "lm_loss" in r}
    assert [r["_step"] for r in rows] == sorted(train)
    for row in rows:
        for key in SERIES:
            assert row[key] == pytest.approx(train[row["_step"]][key], rel=1e-9)


def test_parse_blend():
    assert parse_blend(["a"]) == (["a"], None)
    assert parse_blend(["87", "code", "10", "en", "3", "zh"]) == (
        ["code", "en", "zh"],
        [87.0, 10.0, 3.0],
    )
    with pytest.raises(DataError, match="weight/prefix pairs"):
        parse_blend(["0.5", "a", "b"])
    with pytest.raises(DataError, match="must be numbers"):
        parse_blend(["a", "b"])


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_sampler_deals_the_same_global_batch_at_any_dp(dp):
    per_rank = [
        list(
            MicroBatchSampler(
                total_samples=32, consumed_samples=8, micro_batch_size=2, dp_rank=r, dp_size=dp
            )
        )
        for r in range(dp)
    ]
    dealt = sorted(i for rank in per_rank for mb in rank for i in mb)
    assert dealt == list(range(8, 32))


def test_bos_policy_is_read_from_the_data_and_checked(token_corpus, tmp_path):
    """The fixture's documents open with BOS: the policy is read as True, ``--no-bos``
    contradicts it, and a blend must agree across its prefixes."""
    from megatron_dscoder.data.indexed import DataError
    from megatron_dscoder.datasets.gpt import check_bos
    from megatron_dscoder.tokenizer import BOS, load_tokenizer
    from tests.training.conftest import write_prefix

    bos = load_tokenizer(token_corpus["tokenizer"]).token_to_id(BOS)
    code = str(token_corpus["code"])
    assert check_bos([code], bos, None) is True and check_bos([code], bos, True) is True
    with pytest.raises(DataError, match="starts with BOS, but --no-bos says otherwise"):
        check_bos([code], bos, False)
    plain = str(write_prefix(tmp_path / "plain", [[5, 6, 7, token_corpus["eos"]]] * 3))
    assert check_bos([plain], bos, None) is False
    with pytest.raises(DataError, match="does not start with BOS, but --bos says otherwise"):
        check_bos([plain], bos, True)
    with pytest.raises(DataError, match="mixes prefixes with BOS"):
        check_bos(["1", code, "1", plain], bos, None)
