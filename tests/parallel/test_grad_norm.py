"""The gradient norm used for clipping equals a float64 reference, whatever the tensor sizes.

megatron-core's fallback without apex/TE (``torch.norm`` of fp32 tensors) is off by ~3e-5 on CPU
for a 32,128 x 64 gradient; :mod:`megatron_dscoder.parallel.grad_norm` must be exact to fp32
rounding. End to end (real runs, every layout) this is checked in ``test_parity_trained.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from megatron_dscoder.parallel import grad_norm


def reference(tensors: list[torch.Tensor]) -> float:
    """The exactly rounded norm: fp32 squares are exact in float64, math.fsum adds exactly."""
    return math.sqrt(
        math.fsum(math.fsum(t.double().square().reshape(-1).tolist()) for t in tensors)
    )


@pytest.fixture(scope="module")
def grads() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(32128, 64), (16064, 64), (176, 64), (64,)]
    return [torch.randn(*shape, generator=gen) * 1e-3 for shape in shapes]


def test_norm_is_exact_to_fp32_rounding(grads):
    norm, per_tensor = grad_norm.l2_norm(2048 * 32, torch.zeros(1), [grads], True)
    assert norm.dtype == torch.float32 and norm.shape == (1,)
    assert norm.item() == pytest.approx(reference(grads), rel=1e-7)
    for value, tensor in zip(per_tensor.tolist(), grads, strict=True):
        assert value == pytest.approx(reference([tensor]), rel=1e-7)


def test_chunked_accumulation_equals_whole(grads, monkeypatch):
    whole = grad_norm.sum_of_squares(grads[0]).item()
    monkeypatch.setattr(grad_norm, "CHUNK_ELEMENTS", 1000)  # 2,057 chunks
    assert grad_norm.sum_of_squares(grads[0]).item() == pytest.approx(whole, rel=1e-14)


def test_empty_list_and_bf16():
    norm, per_tensor = grad_norm.l2_norm(1, torch.zeros(1), [[]], False)
    assert norm.item() == 0.0 and per_tensor is None
    t = torch.full((3, 4), 0.5, dtype=torch.bfloat16)
    assert grad_norm.l2_norm(1, torch.zeros(1), [[t]], False)[0].item() == pytest.approx(
        math.sqrt(3)
    )


def test_install_replaces_the_local_fallback():
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_l2_norm

    if clip_grads.l2_norm_impl not in (local_multi_tensor_l2_norm, grad_norm.l2_norm):
        pytest.skip("apex's or Transformer Engine's fused kernel is in use")
    assert grad_norm.install() and grad_norm.install()  # idempotent, no apex/TE here
    assert clip_grads.l2_norm_impl is grad_norm.l2_norm
