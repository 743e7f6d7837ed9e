"""MFU in Megatron-LM's convention: the FLOP count and the per-variant peaks.

``megatron_lm_flops`` below re-computes Megatron-LM's ``num_floating_point_operations`` for a dense
GQA decoder with SwiGLU from its published structure (3x for forward + both backward GEMMs, 2x per
multiply-add, attention core over half the s x s square, logits over the padded vocabulary), in
Megatron-LM's own argument names, independently of ``model/flops.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from megatron_dscoder.model import flops
from megatron_dscoder.model.registry import MODELS

DEEPSEEK_PADDED_VOCAB = 32256  # the published embedding rows of every DeepSeek-Coder size


def megatron_lm_flops(args: SimpleNamespace, batch_size: int) -> float:
    fwd_bwd, fma = 3, 2
    ffn_factor = 3 if args.swiglu else 2
    groups = args.num_query_groups if args.group_query_attention else args.num_attention_heads
    q = args.kv_channels * args.num_attention_heads
    k = v = args.kv_channels * groups
    attention = (
        fwd_bwd
        * fma
        * (args.hidden_size * (q + k + v) + q * args.seq_length / 2 * 2 + q * args.hidden_size)
    )
    mlp = fwd_bwd * fma * args.hidden_size * args.ffn_hidden_size * ffn_factor
    logits = fwd_bwd * fma * args.hidden_size * args.padded_vocab_size
    return batch_size * args.seq_length * (args.num_layers * (mlp + attention) + logits)


def megatron_args(name: str, seq_length: int) -> SimpleNamespace:
    arch = MODELS[name]
    return SimpleNamespace(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        group_query_attention=arch.num_query_groups != arch.num_attention_heads,
        kv_channels=arch.hidden_size // arch.num_attention_heads,
        seq_length=seq_length,
        padded_vocab_size=DEEPSEEK_PADDED_VOCAB,
        swiglu=True,
    )


@pytest.mark.parametrize("seq_length", [4096, 16384])
@pytest.mark.parametrize("name", ["1.3b", "6.7b", "33b"])
def test_flops_equal_megatron_lm(name, seq_length):
    expected = megatron_lm_flops(megatron_args(name, seq_length), batch_size=1024)
    got = flops.flops_per_iteration(MODELS[name], 1024, seq_length)
    assert got == pytest.approx(expected, rel=1e-12)
    # GQA is exercised (33B has 8 KV groups for 56 heads) and the logits count the padded rows.
    assert MODELS[name].padded_vocab_size() == DEEPSEEK_PADDED_VOCAB


def test_the_causal_count_is_below_the_full_square_by_the_documented_margin():
    def full_square(name: str, s: int) -> float:
        arch = MODELS[name]
        extra = 3 * arch.num_layers * 2 * s * arch.num_attention_heads * arch.kv_channels
        return flops.flops_per_token(arch, s) + extra

    ratio = {
        s: full_square("1.3b", s) / flops.flops_per_token(MODELS["1.3b"], s) for s in (4096, 16384)
    }
    assert ratio[4096] == pytest.approx(1.136, abs=0.001)
    assert ratio[16384] == pytest.approx(1.39, abs=0.005)


# torch.cuda.get_device_name() strings as the devices report them.
DEVICE_NAMES = {
    "NVIDIA A100-SXM4-80GB": ("A100 SXM", 312.0),
    "NVIDIA A100-SXM4-40GB": ("A100 SXM", 312.0),
    "NVIDIA A100-PCIE-40GB": ("A100 PCIe", 312.0),
    "NVIDIA A100 80GB PCIe": ("A100 PCIe", 312.0),
    "NVIDIA A800-SXM4-80GB": ("A800 SXM", 312.0),
    "NVIDIA A800 80GB PCIe": ("A800 PCIe", 312.0),
    "NVIDIA H100 80GB HBM3": ("H100 SXM", 989.0),
    "NVIDIA H100 PCIe": ("H100 PCIe", 756.0),
    "NVIDIA H100 NVL": ("H100 NVL", 835.0),
    "NVIDIA H800": ("H800 SXM", 989.0),
    "NVIDIA H800 80GB HBM3": ("H800 SXM", 989.0),
    "NVIDIA H800 PCIe": ("H800 PCIe", 756.0),
    "NVIDIA H200": ("H200 SXM", 989.0),
    "NVIDIA H200 NVL": ("H200 NVL", 835.0),
    "NVIDIA GH200 480GB": ("GH200", 989.0),
    "NVIDIA H20": ("H20", 148.0),
    "NVIDIA L40S": ("L40S", 362.0),
    "NVIDIA B200": ("B200", 2250.0),
    "NVIDIA GB200": ("GB200", 2500.0),
}


@pytest.mark.parametrize("device_name", sorted(DEVICE_NAMES))
def test_peak_per_device_variant(device_name):
    variant, peak = DEVICE_NAMES[device_name]
    assert flops.device_variant(device_name) == variant
    assert flops.peak_tflops_for(device_name) == peak


def test_every_variant_in_the_table_is_reachable_and_unknown_devices_give_none():
    reached = {variant for variant, _ in DEVICE_NAMES.values()}
    assert reached == set(flops.PEAK_TFLOPS)
    for unknown in ("NVIDIA GeForce RTX 4090", "NVIDIA H800 NVL", "Tesla V100-SXM2-32GB"):
        assert flops.peak_tflops_for(unknown) is None
    assert flops.PLANNING_PEAK_TFLOPS == 989.0
