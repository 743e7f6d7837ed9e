"""Parity from a trained state: one more step from a checkpoint trained on real code, any layout.

The debug model trains 10 iterations on real preprocessed code (standard-library modules through
the tiny tokenizer, Megatron ``.bin``/``.idx``) at TP=1 and saves a checkpoint; TP=1, TP=2,
TP=2 + SP, PP=2 and DP=2 with the distributed optimizer each resume it for iteration 11. Their
loss and grad_norm must equal TP=1's within the variant's tolerance, and every layout's
grad_norm (and each of the 10 training steps') must equal a float64 norm of its own reduced
gradients, computed by ``tests/workers/grad_norm_check.py``, within 1e-6: clipping, and with it
the trajectory, must not depend on the layout.

A variant is one precision or backend, with its own checkpoint and its own TP=1 reference; adding
one (an attention backend) is one more ``VARIANTS`` entry. PP=2 and DP=2 change no per-sample
arithmetic and hold 1e-6 in every variant. fp32 TP holds 1e-6 too. bf16 keeps fp32 main weights
and fp32 gradient accumulation, but TP=2 splits each row-parallel bf16 GEMM into two partial
sums, each rounded to bf16 and then added: an activation may move by one bf16 ulp (2^-8
relative). Measured against bf16 TP=1 (TP=2 and TP=2+SP alike): loss 1.1e-5 (an average over
512 tokens), grad_norm 7.4e-4. The bounds are one ulp for grad_norm and 1e-4 for the loss.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.launch import REPO, WORKERS, read_jsonl, torchrun
from tests.training.conftest import token_corpus  # noqa: F401 - shared fixture

TRAINED_ITERS = 10


@dataclass(frozen=True)
class Variant:
    flags: str
    tp_loss_rel: float = 1e-6
    """Tolerance of TP layouts' loss against this variant's TP=1."""
    tp_grad_norm_rel: float = 1e-6


VARIANTS = {
    "fp32": Variant("--no-bf16"),
    "bf16": Variant("--bf16", tp_loss_rel=1e-4, tp_grad_norm_rel=2**-8),
}
LAYOUTS = {
    "tp2": "--tensor-model-parallel-size 2",
    "tp2_sp": "--tensor-model-parallel-size 2 --sequence-parallel",
    "pp2": "--pipeline-model-parallel-size 2",
    # Weights only: megatron-core names the distributed optimizer's state differently.
    "dp2_distopt": "--use-distributed-optimizer --no-load-optim",
}
EXACT_LAYOUTS = ("pp2", "dp2_distopt")
"""Layouts that change no per-sample arithmetic: 1e-6 in every variant."""


def common(corpus: dict) -> str:
    return (
        f"--model debug --data-path {corpus['code']} --tokenizer-model {corpus['tokenizer']} "
        "--split 100,0,0 --seq-length 64 --micro-batch-size 2 --global-batch-size 8 "
        "--lr 1e-3 --seed 5"
    )


@pytest.fixture(scope="module")
def runs(token_corpus, tmp_path_factory) -> dict:  # noqa: F811
    out = tmp_path_factory.mktemp("parity_trained")
    base = common(token_corpus)
    single, pairs = [str(out)], [str(out)]
    for name, variant in VARIANTS.items():
        flags, ckpt = f"{base} {variant.flags}", out / f"ckpt_{name}"
        single += [f"train_{name}", f"{flags} --train-iters {TRAINED_ITERS} --save {ckpt}"]
        single += [f"tp1_{name}", f"{flags} --train-iters {TRAINED_ITERS + 1} --load {ckpt}"]
        for layout, layout_flags in LAYOUTS.items():
            pairs += [
                f"{layout}_{name}",
                f"{flags} {layout_flags} --train-iters {TRAINED_ITERS + 1} --load {ckpt}",
            ]
    # The same trained state, one more step with megatron-core's unfused attention (the CPU
    # default, ``auto``, is sdpa): the backends must agree from a trained state too.
    unfused = f"{base} --no-bf16 --attention-backend unfused --train-iters {TRAINED_ITERS + 1}"
    unfused += f" --load {out / 'ckpt_fp32'}"
    single += ["tp1_fp32_unfused", unfused]
    pairs += ["tp2_sp_fp32_unfused", f"{unfused} {LAYOUTS['tp2_sp']}"]
    torchrun(1, WORKERS / "grad_norm_check.py", *single)  # train and TP=1, one launch
    export_cmd = [sys.executable, "tools/convert_checkpoint.py", "to-hf", "--load"]
    export_cmd += [str(out / "ckpt_bf16"), "--save", str(out / "hf_bf16"), "--check-logits"]
    with ThreadPoolExecutor(1) as pool:  # the export reads the checkpoint beside the launch
        exported = pool.submit(
            subprocess.run, export_cmd, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        torchrun(2, WORKERS / "grad_norm_check.py", *pairs)  # every 2-rank layout, one launch
        export = exported.result()
    results: dict = {"export_bf16": export}
    for name in single[1::2] + pairs[1::2]:
        ref = out / f"{name}.ref.json"
        results[name] = {
            "metrics": read_jsonl(out / f"{name}.jsonl"),
            "norms": json.loads(ref.read_text()) if ref.exists() else [],
        }
    return results


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_is_trained(runs, variant):
    losses = [r["lm_loss"] for r in runs[f"train_{variant}"]["metrics"]]
    assert len(losses) == TRAINED_ITERS and losses[-1] < losses[0] - 0.2


def test_bf16_tracks_fp32(runs):
    """Same seed, same data: bf16 mixed precision follows the fp32 loss curve.

    Measured over 10 iterations: max |bf16 - fp32| 7e-4; over 50 (same settings, ``--train-iters
    50``): max 1.5e-3, final 7.9e-4, while the loss falls 7.35 -> 5.98. The bound, 5e-3, is 3x
    the 50-iteration maximum and under 2 % of the 10 iterations' loss drop (0.36).
    """
    fp32 = [r["lm_loss"] for r in runs["train_fp32"]["metrics"]]
    bf16 = [r["lm_loss"] for r in runs["train_bf16"]["metrics"]]
    assert len(fp32) == len(bf16) == TRAINED_ITERS
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 5e-3
    assert fp32 != bf16  # the bf16 path really ran


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_first_step_matches_tp1(runs, variant, layout):
    (ref,) = runs[f"tp1_{variant}"]["metrics"]
    (got,) = runs[f"{layout}_{variant}"]["metrics"]
    assert ref["iteration"] == got["iteration"] == TRAINED_ITERS + 1
    v = VARIANTS[variant]
    exact = layout in EXACT_LAYOUTS
    for key, rel in (("lm_loss", v.tp_loss_rel), ("grad_norm", v.tp_grad_norm_rel)):
        rel = 1e-6 if exact else rel
        assert got[key] == pytest.approx(ref[key], rel=rel), (variant, layout, key)


@pytest.mark.parametrize("layout", ["tp1", "tp2_sp"])
def test_sdpa_matches_unfused_from_the_trained_state(runs, layout):
    (sdpa,) = runs[f"{layout}_fp32"]["metrics"]
    (unfused,) = runs[f"{layout}_fp32_unfused"]["metrics"]
    assert sdpa["iteration"] == unfused["iteration"] == TRAINED_ITERS + 1
    for key in ("lm_loss", "grad_norm"):
        assert unfused[key] == pytest.approx(sdpa[key], rel=1e-6), (layout, key)


@pytest.mark.parametrize("layout", ["train", "tp1", "tp2", "tp2_sp", "pp2"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_grad_norm_equals_float64_reference(runs, variant, layout):
    norms = runs[f"{layout}_{variant}"]["norms"]
    assert len(norms) == (TRAINED_ITERS if layout == "train" else 1)
    for reference, reported in norms:
        assert reported == pytest.approx(reference, rel=1e-6), (variant, layout)


def test_bf16_checkpoint_exports_to_hf(runs):
    """The bf16 weights are exported as bf16 (lossless); the logits check runs both models in
    fp32 on those same values, so the tool's default tolerance (1e-4) applies (measured 3e-7)."""
    export = runs["export_bf16"]
    assert export.returncode == 0, export.stderr[-3000:]
    assert "bfloat16" in export.stdout
    diff = float(re.search(r"max abs logits difference (\S+)", export.stdout).group(1))
    assert diff <= 1e-4
