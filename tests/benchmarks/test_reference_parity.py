"""``benchmarks/reference_parity.py --scale smoke``: our trainer (the real entry point, from an
HF checkpoint imported with ``dscoder-convert from-hf``) against the independent plain-PyTorch
trainer (transformers + torch AdamW) for 20 steps of warm-up and DeepSeek's three stages, fp32.

Acceptance: loss and gradient norm agree to 1e-5 relative at every step. The same run also
trains the reference with weight decay on the norm gains, to show the check sees that slip.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks import smokes

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    status, output, out = smokes.result(__file__, tmp_path_factory.mktemp("reference_parity"))
    assert status == 0, output[-4000:]
    assert (out / "reference_parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "reference_parity.json").read_text())


def test_every_step_agrees_with_the_reference(report):
    ref, ours = report["reference"], report["layouts"]["tp1"]
    assert len(ours["lm_loss"]) == len(ref["lm_loss"]) == report["config"]["steps"] >= 20
    for key in ("lm_loss", "grad_norm"):
        for step, (a, b) in enumerate(zip(ours[key], ref[key], strict=True), start=1):
            assert math.isfinite(a) and abs(a - b) <= TOLERANCE * abs(b), (key, step, a, b)
    assert ours["lr"] == pytest.approx(ref["lr"], rel=1e-12, abs=0)
    assert ours["lm_loss"][-1] < ours["lm_loss"][0] - 0.2  # it trains
    clip = report["config"]["clip_grad"]
    assert min(ref["grad_norm"]) < clip < max(ref["grad_norm"])  # clipped steps and free ones


def test_schedule_covers_warmup_and_three_stages(report):
    peak, lrs = report["config"]["lr"], report["reference"]["lr"]
    warmup = report["config"]["warmup"]
    assert lrs[:warmup] == pytest.approx([peak * (i + 1) / warmup for i in range(warmup)])
    stages = sorted({round(lr / peak, 4) for lr in lrs[warmup:]}, reverse=True)
    assert stages == [1.0, round(math.sqrt(0.1), 4), 0.1]


def test_the_check_sees_decayed_norm_gains(report):
    """Decaying the RMSNorm gains too (the slip) moves both curves far beyond the tolerance."""
    slip = report["gaps"]["reference decaying norms"]
    assert slip["lm_loss"]["max_rel"] > 3 * TOLERANCE
    assert slip["grad_norm"]["max_rel"] > 100 * TOLERANCE
