"""``benchmarks/bench_activations.py`` on a CPU: the planner's bytes per token per layer are
within 10 % of what autograd keeps, for every case measurable here (unfused and sdpa, recompute
none / selective / full, fp32 and bf16), on a small GQA shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.launch import REPO

SHAPE = (
    "--hidden-size 128 --ffn-hidden-size 352 --num-attention-heads 4 --num-query-groups 2 "
    "--seq-length 64 --micro-batch-size 2"
)


def test_planner_within_ten_percent_of_saved_tensors(tmp_path):
    out = tmp_path / "activations.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_activations.py", *SHAPE.split(), "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    cases = {(c["backend"], c["dtype"], c["recompute"]): c for c in report["cases"]}
    assert set(cases) == {
        (b, d, r)
        for b in ("unfused", "sdpa")
        for d in ("fp32", "bf16")
        for r in ("none", "selective", "full")
    }
    for key, c in cases.items():
        assert abs(c["ratio_planned_to_measured"] - 1) <= 0.10, (key, c)
    # The measurement sees what each setting changes: bf16 halves the kept inputs, full
    # recompute keeps one input per layer, the unfused kernel keeps s x s probabilities.
    got = {k: c["measured_bytes_per_token_per_layer"] for k, c in cases.items()}
    assert got["sdpa", "fp32", "full"] == 4 * 128 and got["sdpa", "bf16", "full"] == 2 * 128
    assert got["unfused", "bf16", "none"] > got["sdpa", "bf16", "none"]
    assert got["unfused", "bf16", "selective"] == got["sdpa", "bf16", "selective"]
    assert {s["backend"] for s in report["skipped"]} == {"flash", "transformer_engine"}


@pytest.mark.gpu
def test_planner_within_ten_percent_on_cuda(tmp_path):
    """The GPU-only terms (fused ``rms_norm``, SDPA's output layout, compiled RoPE, TE and
    flash-attn where importable) against the measurement on a GPU, bf16 and fp32."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "activations.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_activations.py", *SHAPE.split(), "--device", "cuda",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    cases = json.loads(out.read_text())["cases"]
    assert {c["backend"] for c in cases} >= {"sdpa", "unfused"}
    for c in cases:
        assert abs(c["ratio_planned_to_measured"] - 1) <= 0.10, c
