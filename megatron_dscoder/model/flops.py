"""Model FLOPs in Megatron-LM's convention, and the dense bf16 peaks MFU is measured against.

Megatron-LM's ``num_floating_point_operations`` (dense GQA decoder with SwiGLU) counts, per token
and per layer, forward, with one multiply-add = 2 FLOPs::

    QKV projection     2 * h * (n_heads + 2 * n_kv_groups) * d     # GQA: K and V are smaller
    attention output   2 * h * (n_heads * d)
    scores + values    2 * 2 * (s / 2) * (n_heads * d)              # causal: the lower triangle
    SwiGLU MLP         2 * 3 * h * f                                # gate, up, down
  plus the logits      2 * h * V_padded

Training is 3x forward (backward = 2x). The attention term is the causal one: a token attends to
about s/2 positions, so QK^T and AV are counted over half the s x s square. PaLM's and
torchtitan's convention counts the full square, which reads 13.6 % higher at 1.3B/4K and 39 %
higher at 16K; figures from this module compare directly with Megatron-LM's logs. Activation
recomputation is not counted (model FLOPs, not hardware FLOPs), as in Megatron-LM, so MFU is
comparable across recompute settings.
"""

from __future__ import annotations

import re

from megatron_dscoder.model.registry import ModelArch

MFU_CONVENTION = "Megatron-LM's (causal attention: half the s x s square; no recompute)"
"""How the logs and benchmarks count model FLOPs, in words."""

PEAK_TFLOPS: dict[str, float] = {
    "A100 SXM": 312.0,
    "A100 PCIe": 312.0,
    "A800 SXM": 312.0,
    "A800 PCIe": 312.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H800 SXM": 989.0,
    "H800 PCIe": 756.0,
    "H200 SXM": 989.0,
    "H200 NVL": 835.0,
    "GH200": 989.0,
    "H20": 148.0,
    "L40S": 362.0,
    "B200": 2250.0,
    "GB200": 2500.0,
}
"""NVIDIA's dense (no sparsity) bf16 tensor-core peak per device variant, TFLOP/s. The PCIe and
NVL Hopper cards run lower clocks and power than SXM; B200 is the HGX (1000 W) part, GB200 the
Grace-Blackwell superchip's GPU."""

_VARIANTS: list[tuple[str, str | None]] = [
    # Order matters: the first pattern that matches the device name wins.
    (r"\bGB200\b", "GB200"),
    (r"\bB200\b", "B200"),
    (r"\bGH200\b", "GH200"),
    (r"\bH200\b.*\bNVL\b", "H200 NVL"),
    (r"\bH200\b", "H200 SXM"),
    (r"\bH100\b.*\bNVL\b", "H100 NVL"),
    (r"\bH100\b.*\bPCIE\b", "H100 PCIe"),
    (r"\bH100\b", "H100 SXM"),
    (r"\bH800\b.*\bNVL\b", None),  # no published figure: unknown, not guessed
    (r"\bH800\b.*\bPCIE\b", "H800 PCIe"),
    (r"\bH800\b", "H800 SXM"),
    (r"\bH20\b", "H20"),
    (r"\bA100\b.*\bPCIE\b", "A100 PCIe"),
    (r"\bA100\b", "A100 SXM"),
    (r"\bA800\b.*\bPCIE\b", "A800 PCIe"),
    (r"\bA800\b", "A800 SXM"),
    (r"\bL40S\b", "L40S"),
]

PLANNING_PEAK_TFLOPS = PEAK_TFLOPS["H800 SXM"]
"""What ``--dry-run`` plans for without ``--peak-tflops``: the paper's H800."""


def flops_per_token(arch: ModelArch, seq_length: int, tensor_model_parallel_size: int = 1) -> float:
    """Training (forward + backward) model FLOPs per token, Megatron-LM's causal count."""
    h, d, f = arch.hidden_size, arch.kv_channels, arch.ffn_hidden_size
    heads, groups = arch.num_attention_heads, arch.num_query_groups
    per_layer = (
        2 * h * (heads + 2 * groups) * d  # QKV
        + 2 * h * heads * d  # attention output projection
        + 2 * 2 * (seq_length / 2) * heads * d  # QK^T and AV over the causal half
        + 2 * 3 * h * f  # SwiGLU: gate, up, down
    )
    logits = 2 * h * arch.padded_vocab_size(tensor_model_parallel_size)
    return 3.0 * (arch.num_layers * per_layer + logits)


def flops_per_iteration(
    arch: ModelArch, global_batch_size: int, seq_length: int, tensor_model_parallel_size: int = 1
) -> float:
    """Training model FLOPs of one global batch (Megatron-LM's
    ``num_floating_point_operations``)."""
    tokens = global_batch_size * seq_length
    return flops_per_token(arch, seq_length, tensor_model_parallel_size) * tokens


def device_variant(name: str) -> str | None:
    """The :data:`PEAK_TFLOPS` key of a ``torch.cuda.get_device_name()`` string, if known."""
    upper = name.upper()
    for pattern, variant in _VARIANTS:
        if re.search(pattern, upper):
            return variant
    return None


def peak_tflops_for(name: str) -> float | None:
    """Dense bf16 peak of the device called ``name``; ``None`` when the variant is unknown."""
    variant = device_variant(name)
    return PEAK_TFLOPS[variant] if variant else None


def device_peak_tflops() -> float | None:
    """The current CUDA device's dense bf16 peak, when known; ``None`` on CPU or unknown GPUs."""
    import torch

    if not torch.cuda.is_available():
        return None
    return peak_tflops_for(torch.cuda.get_device_name())
