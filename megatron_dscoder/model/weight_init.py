"""Layout-independent weight initialisation: the same ``--seed`` gives the same full model at
any TP/PP.

Megatron initialises each rank's shard from that rank's RNG stream, so the model depends on the
parallel layout. Here every weight element is a pure function of ``(seed, parameter name,
global element index)``: a counter-based hash (no RNG state) turned into a normal sample by
Box-Muller. Each rank computes only the elements of its own shard, so the cost is O(local
parameters), on whatever device the parameter lives, and the result is bit-identical across
layouts. This is what makes the parity tests of parallel layouts against one process possible.

Canonical (TP=1, PP=1) names and shapes; the local shard of each is found from megatron-core's
partitioning attributes (``partition_dim``) plus one special case, SwiGLU's fc1, whose rows are
``[gate; up]`` on every rank (so a TP shard is two row ranges of the full tensor)::

    embedding.word_embeddings.weight             [V_pad, h]          rows split by TP
    decoder.layers.{L}.self_attention.linear_qkv [ng*(nq/ng+2)*d, h] rows split (whole groups)
    decoder.layers.{L}.self_attention.linear_proj[h, nq*d]           columns split
    decoder.layers.{L}.mlp.linear_fc1.weight     [2f, h] = [gate; up] each half's rows split
    decoder.layers.{L}.mlp.linear_fc2.weight     [h, f]              columns split
    *norm*.weight / *layer_norm_weight           [h]                 ones
    output_layer.weight                          [V_pad, h]          rows split by TP

``L`` is the global layer index (``TransformerLayer.layer_number - 1``), so pipeline stages agree.
"""

from __future__ import annotations

import math
import re
import zlib

import torch
from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

_M32 = 0xFFFFFFFF
_CHUNK = 1 << 22
_LOCAL_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.")


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash on int64 tensors; multipliers < 2**31 keep products < 2**63."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def _normal(index: torch.Tensor, key: int) -> torch.Tensor:
    """Standard normal samples, one per global element index (int64), as float64."""
    a = _mix32(_mix32(index ^ (key & _M32)) ^ (key >> 32))
    b = _mix32(a ^ 0x9E3779B9)
    u1 = (a.double() + 0.5) / 2.0**32  # (0, 1): log is finite
    u2 = b.double() / 2.0**32
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def _key(seed: int, name: str) -> int:
    """A stable 64-bit key per (seed, canonical parameter name); ``hash()`` is salted
    per process."""
    lo = zlib.crc32(f"{seed}/{name}".encode())
    hi = zlib.crc32(f"{name}/{seed}".encode())
    return (hi << 32) | lo


def _fill(param: torch.Tensor, key: int, std: float, index_ranges: list[torch.Tensor]) -> None:
    """Write normal(0, std) samples for the given global flat indices into ``param``
    (flat order)."""
    flat = param.data.view(-1)
    pos = 0
    for idx in index_ranges:
        idx = idx.reshape(-1)
        for start in range(0, idx.numel(), _CHUNK):
            chunk = idx[start : start + _CHUNK].to(param.device)
            n = chunk.numel()
            flat[pos : pos + n].copy_((_normal(chunk, key) * std).to(param.dtype))
            pos += n
    assert pos == flat.numel(), f"initialised {pos} of {flat.numel()} elements"


def _global_indices(
    param: torch.Tensor, name: str, tp_rank: int, tp_size: int
) -> list[torch.Tensor]:
    """Global flat indices (into the canonical TP=1 tensor) of this rank's shard, in local order."""
    rows, cols = param.shape
    if not getattr(param, "tensor_model_parallel", False) or tp_size == 1:
        return [torch.arange(rows * cols, dtype=torch.int64)]
    if param.partition_dim == 0:
        if name.endswith("linear_fc1.weight"):  # [gate_r; up_r] per rank, of [gate; up] globally
            half = rows // 2
            full_half = half * tp_size
            return [
                torch.arange(half * cols, dtype=torch.int64)
                + (part * full_half + tp_rank * half) * cols
                for part in (0, 1)
            ]
        return [torch.arange(rows * cols, dtype=torch.int64) + tp_rank * rows * cols]
    full_cols = cols * tp_size
    r = torch.arange(rows, dtype=torch.int64)[:, None] * full_cols
    c = torch.arange(cols, dtype=torch.int64)[None, :] + tp_rank * cols
    return [r + c]


def _canonical_name(name: str, layer_offsets: dict[int, int]) -> str:
    match = _LOCAL_LAYER.match(name)
    if match is None:
        return name
    local = int(match.group(1))
    return f"decoder.layers.{layer_offsets[local]}." + name[match.end() :]


def mark_tensor_parallel_params(model: torch.nn.Module) -> None:
    """Set megatron-core's TP attributes on sharded weights.

    megatron-core sets ``tensor_model_parallel``/``partition_dim`` only inside its own
    initialisation, which we skip (``perform_initialization=False``); without them the gradient
    norm would count every TP shard of a replicated weight. Column-parallel weights (and the
    vocabulary-parallel embedding) are split on rows, row-parallel weights on columns; the fused
    norm weight of TE's LayerNormLinear stays replicated.
    """
    for module in model.modules():
        kind = type(module).__name__
        weight = module._parameters.get("weight")
        if weight is None or hasattr(weight, "partition_dim"):
            continue
        if "ColumnParallel" in kind or kind == "VocabParallelEmbedding":
            set_tensor_model_parallel_attributes(weight, is_parallel=True, dim=0, stride=1)
        elif "RowParallel" in kind:
            set_tensor_model_parallel_attributes(weight, is_parallel=True, dim=1, stride=1)


@torch.no_grad()
def initialize_model(
    model: torch.nn.Module,
    seed: int,
    *,
    init_method_std: float,
    num_layers: int,
    tp_rank: int,
    tp_size: int,
) -> None:
    """Initialise every parameter of one model chunk in place, independently of the layout.

    Norm weights are ones. ``linear_proj`` and ``linear_fc2`` (the projections that add into the
    residual stream) use ``std / sqrt(2 * num_layers)``, as Megatron's scaled init does.
    """
    mark_tensor_parallel_params(model)
    layer_offsets = {}
    decoder = getattr(model, "decoder", None)
    for local, layer in enumerate(getattr(decoder, "layers", [])):
        layer_offsets[local] = layer.layer_number - 1
    scaled_std = init_method_std / math.sqrt(2.0 * num_layers)
    for name, param in model.named_parameters():
        canonical = _canonical_name(name, layer_offsets)
        if param.dim() == 1:
            if "norm" not in name:
                raise ValueError(f"no initialisation rule for 1-d parameter {name}")
            param.fill_(1.0)
            continue
        std = scaled_std if re.search(r"linear_(proj|fc2)\.weight$", name) else init_method_std
        _fill(param, _key(seed, canonical), std, _global_indices(param, name, tp_rank, tp_size))
