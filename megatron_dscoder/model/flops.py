"""Model FLOPs per token, right for GQA and SwiGLU, and the device peaks MFU is measured against.

Forward FLOPs per token (one multiply-add = 2 FLOPs), per layer::

    QKV projection     2 * h * (n_heads + 2 * n_kv_groups) * d     # GQA: K and V are smaller
    attention output   2 * h * (n_heads * d)
    scores + values    2 * 2 * s * (n_heads * d)                    # QK^T and AV, full square
    SwiGLU MLP         2 * 3 * h * f                                # gate, up, down
  plus the logits      2 * h * V_padded

Training is 3x forward (backward = 2x). Activation recomputation is not counted (model FLOPs,
not hardware FLOPs), so MFU is comparable across recompute settings, as in PaLM's definition.
"""

from __future__ import annotations

from megatron_dscoder.model.registry import ModelArch

# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity).
PEAK_TFLOPS = {
    "H100": 989.0,
    "H800": 989.0,
    "H200": 989.0,
    "H20": 148.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "B200": 2250.0,
}
PLANNING_PEAK_TFLOPS = PEAK_TFLOPS["H800"]
"""What ``--dry-run`` plans for without ``--peak-tflops``: the paper's H800."""


def flops_per_token(arch: ModelArch, seq_length: int, tensor_model_parallel_size: int = 1) -> float:
    """Training (forward + backward) model FLOPs per token."""
    h, d, f = arch.hidden_size, arch.kv_channels, arch.ffn_hidden_size
    heads, groups = arch.num_attention_heads, arch.num_query_groups
    per_layer = (
        2 * h * (heads + 2 * groups) * d
        + 2 * h * heads * d
        + 4 * seq_length * heads * d
        + 6 * h * f
    )
    logits = 2 * h * arch.padded_vocab_size(tensor_model_parallel_size)
    return 3.0 * (arch.num_layers * per_layer + logits)


def flops_per_iteration(arch: ModelArch, global_batch_size: int, seq_length: int) -> float:
    """Training model FLOPs of one global batch."""
    return flops_per_token(arch, seq_length) * global_batch_size * seq_length


def device_peak_tflops() -> float | None:
    """The current CUDA device's dense bf16 peak, when known; ``None`` on CPU or unknown GPUs."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None
