"""The Hugging Face Llama <-> megatron-core weight mapping, written once as data.

Every converter direction reads :data:`MAPPINGS`; nothing else in the package spells a weight
name. ``{}`` stands for the global layer index. Megatron names are megatron-core's checkpoint
(TE-spec) names; in a torch_dist checkpoint the decoder layers are stacked along a prepended layer
axis, so the stored key is the name without ``.{}`` (:func:`stacked_key`)::

    HF LlamaForCausalLM                           megatron-core              combine   TP split
    model.embed_tokens.weight                     embedding.word_...weight   vocab     rows
    model.layers.{}.input_layernorm.weight        ...linear_qkv.layer_norm_w copy      -
    model.layers.{}.self_attn.{q,k,v}_proj.weight ...linear_qkv.weight       qkv       rows
    model.layers.{}.self_attn.o_proj.weight       ...linear_proj.weight      copy      columns
    model.layers.{}.post_attention_layernorm.w    ...linear_fc1.layer_norm_w copy      -
    model.layers.{}.mlp.{gate,up}_proj.weight     ...linear_fc1.weight       gate_up   rows
    model.layers.{}.mlp.down_proj.weight          ...linear_fc2.weight       copy      columns
    model.norm.weight                             decoder.final_layernorm.w  copy      -
    lm_head.weight                                output_layer.weight        vocab     rows

The combine rules:

* ``qkv``: megatron fuses Q, K and V **per query group**: for each of the ``ng`` groups, that
  group's ``nh/ng`` query heads, then its K head, then its V head (``d`` rows each). A TP rank
  holds whole groups. HF Q/K already use megatron's rotate-half RoPE layout: no permutation.
* ``gate_up``: SwiGLU's fc1 is ``[gate; up]`` on rows. A TP rank holds a slice of *each* half,
  which megatron-core stores as two chunks, so the global tensor stays ``[gate; up]``.
* ``vocab``: megatron pads the embedding rows (``ModelArch.padded_vocab_size``); rows past the HF
  checkpoint's rows are zero on import and trimmed on export.

Slices: :func:`megatron_slice` builds any row/column range of a megatron tensor straight from the
HF tensors it needs (a reader callback returns slices), so the streaming writer materialises one
checkpoint chunk at a time; :func:`hf_tensors` is the inverse for one whole megatron tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

COPY, QKV, GATE_UP, VOCAB = "copy", "qkv", "gate_up", "vocab"

#: Reads ``index`` (a tuple of slices) of the named HF tensor, like ``safe_open().get_slice``.
HFReader = Callable[[str, tuple[slice, ...]], torch.Tensor]


@dataclass(frozen=True)
class KeyMapping:
    """One megatron tensor and the HF tensor(s) it is made of."""

    megatron: str
    hf: tuple[str, ...]
    combine: str
    tp_axis: int | None
    """Axis of the megatron tensor (without the layer axis) split over tensor parallelism."""

    @property
    def per_layer(self) -> bool:
        """True for decoder-layer weights (names with a ``{}`` layer placeholder)."""
        return "{}" in self.megatron


MAPPINGS: tuple[KeyMapping, ...] = (
    KeyMapping("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), VOCAB, 0),
    KeyMapping(
        "decoder.layers.{}.self_attention.linear_qkv.layer_norm_weight",
        ("model.layers.{}.input_layernorm.weight",),
        COPY,
        None,
    ),
    KeyMapping(
        "decoder.layers.{}.self_attention.linear_qkv.weight",
        (
            "model.layers.{}.self_attn.q_proj.weight",
            "model.layers.{}.self_attn.k_proj.weight",
            "model.layers.{}.self_attn.v_proj.weight",
        ),
        QKV,
        0,
    ),
    KeyMapping(
        "decoder.layers.{}.self_attention.linear_proj.weight",
        ("model.layers.{}.self_attn.o_proj.weight",),
        COPY,
        1,
    ),
    KeyMapping(
        "decoder.layers.{}.mlp.linear_fc1.layer_norm_weight",
        ("model.layers.{}.post_attention_layernorm.weight",),
        COPY,
        None,
    ),
    KeyMapping(
        "decoder.layers.{}.mlp.linear_fc1.weight",
        ("model.layers.{}.mlp.gate_proj.weight", "model.layers.{}.mlp.up_proj.weight"),
        GATE_UP,
        0,
    ),
    KeyMapping(
        "decoder.layers.{}.mlp.linear_fc2.weight",
        ("model.layers.{}.mlp.down_proj.weight",),
        COPY,
        1,
    ),
    KeyMapping("decoder.final_layernorm.weight", ("model.norm.weight",), COPY, None),
    KeyMapping("output_layer.weight", ("lm_head.weight",), VOCAB, 0),
)


def stacked_key(megatron_name: str) -> str:
    """The torch_dist key: ``decoder.layers.{}.x`` -> ``decoder.layers.x`` (layers stacked)."""
    return megatron_name.replace(".{}", "")


BY_STACKED_KEY: dict[str, KeyMapping] = {stacked_key(m.megatron): m for m in MAPPINGS}


def hf_names(mapping: KeyMapping, layer: int | None) -> tuple[str, ...]:
    """The HF tensor names of ``mapping`` for one layer (``layer`` is ignored when global)."""
    return tuple(name.format(layer) for name in mapping.hf)


@dataclass(frozen=True)
class Geometry:
    """The sizes the combine rules need."""

    num_attention_heads: int
    num_query_groups: int
    kv_channels: int
    ffn_hidden_size: int
    hf_vocab_rows: int
    """Rows of the HF embedding / lm_head (DeepSeek publishes the padded count, 32256)."""

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    @property
    def qkv_group_rows(self) -> int:
        """Rows of one query group in the fused QKV: its query heads, one K and one V head."""
        return (self.heads_per_group + 2) * self.kv_channels


# ---- small named helpers on whole tensors ---------------------------------------------------


def interleave_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """HF ``q [nh*d, h]``, ``k``/``v [ng*d, h]`` -> megatron ``[ng*(nh/ng+2)*d, h]`` by group."""
    q, k, v = (
        q.unflatten(0, (num_groups, -1)),
        k.unflatten(0, (num_groups, -1)),
        v.unflatten(0, (num_groups, -1)),
    )
    return torch.cat([q, k, v], dim=1).flatten(0, 1)


def split_qkv(
    qkv: torch.Tensor, geometry: Geometry
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave_qkv`: megatron's fused QKV -> HF ``(q, k, v)``."""
    d, per_group = geometry.kv_channels, geometry.heads_per_group
    grouped = qkv.unflatten(0, (geometry.num_query_groups, geometry.qkv_group_rows))
    q, k, v = grouped.split([per_group * d, d, d], dim=1)
    return (
        q.flatten(0, 1).contiguous(),
        k.flatten(0, 1).contiguous(),
        v.flatten(0, 1).contiguous(),
    )


def stack_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """HF ``gate_proj``, ``up_proj`` ``[f, h]`` -> megatron fc1 ``[gate; up]`` ``[2f, h]``."""
    return torch.cat([gate, up], dim=0)


def split_gate_up(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`stack_gate_up`."""
    gate, up = fc1.chunk(2, dim=0)
    return gate.contiguous(), up.contiguous()


def pad_vocab(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Append zero rows up to ``rows`` (megatron's padded vocabulary)."""
    if rows < weight.shape[0]:
        raise ValueError(f"cannot pad {weight.shape[0]} vocabulary rows down to {rows}")
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])])


def trim_vocab(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Keep the first ``rows`` vocabulary rows (drop megatron's padding)."""
    if rows > weight.shape[0]:
        raise ValueError(f"cannot trim {weight.shape[0]} vocabulary rows up to {rows}")
    return weight[:rows].contiguous()


# ---- HF -> megatron, one range along the TP axis at a time ----------------------------------


def _along(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(start, stop),)


def megatron_slice(
    mapping: KeyMapping,
    layer: int | None,
    start: int,
    stop: int,
    read: HFReader,
    geometry: Geometry,
) -> torch.Tensor:
    """Elements ``[start:stop)`` along ``mapping.tp_axis`` of the megatron tensor (whole tensor
    when it is not TP-split: pass ``0, 0``), read from the HF checkpoint through ``read``."""
    names = hf_names(mapping, layer)
    if mapping.tp_axis is None:
        return read(names[0], ())
    if mapping.combine == COPY:
        return read(names[0], _along(mapping.tp_axis, start, stop))
    if mapping.combine == VOCAB:  # rows past the HF rows are megatron's zero padding
        real = max(0, min(stop, geometry.hf_vocab_rows) - start)
        head = read(names[0], _along(0, start, start + real) if real else (slice(0, 0),))
        return pad_vocab(head, stop - start)
    if mapping.combine == GATE_UP:
        f = geometry.ffn_hidden_size
        parts = []
        if start < f:
            parts.append(read(names[0], _along(0, start, min(stop, f))))
        if stop > f:
            parts.append(read(names[1], _along(0, max(start, f) - f, stop - f)))
        return torch.cat(parts) if len(parts) > 1 else parts[0]
    if mapping.combine == QKV:
        block, d = geometry.qkv_group_rows, geometry.kv_channels
        g0, g1 = start // block, -(-stop // block)
        qd = geometry.heads_per_group * d
        fused = interleave_qkv(
            read(names[0], _along(0, g0 * qd, g1 * qd)),
            read(names[1], _along(0, g0 * d, g1 * d)),
            read(names[2], _along(0, g0 * d, g1 * d)),
            g1 - g0,
        )
        return fused[start - g0 * block : stop - g0 * block]
    raise ValueError(f"unknown combine rule {mapping.combine!r} for {mapping.megatron}")


# ---- megatron -> HF, one whole tensor -------------------------------------------------------


def hf_tensors(
    mapping: KeyMapping, layer: int | None, tensor: torch.Tensor, geometry: Geometry
) -> dict[str, torch.Tensor]:
    """The HF tensors that one whole megatron tensor (of one layer) becomes."""
    names = hf_names(mapping, layer)
    if mapping.combine == COPY:
        return {names[0]: tensor.contiguous()}
    if mapping.combine == VOCAB:
        return {names[0]: trim_vocab(tensor, geometry.hf_vocab_rows)}
    if mapping.combine == GATE_UP:
        return dict(zip(names, split_gate_up(tensor), strict=True))
    if mapping.combine == QKV:
        return dict(zip(names, split_qkv(tensor, geometry), strict=True))
    raise ValueError(f"unknown combine rule {mapping.combine!r} for {mapping.megatron}")


def megatron_shape(
    mapping: KeyMapping, hidden_size: int, geometry: Geometry, vocab_rows: int
) -> tuple[int, ...]:
    """Expected shape of one layer's megatron tensor (``vocab_rows``: padded embedding rows)."""
    h, f = hidden_size, geometry.ffn_hidden_size
    if mapping.combine == VOCAB:
        return (vocab_rows, h)
    if mapping.combine == QKV:
        return (geometry.num_query_groups * geometry.qkv_group_rows, h)
    if mapping.combine == GATE_UP:
        return (2 * f, h)
    return hf_shapes(mapping, hidden_size, geometry)[0]


def hf_shapes(
    mapping: KeyMapping, hidden_size: int, geometry: Geometry
) -> tuple[tuple[int, ...], ...]:
    """Expected HF tensor shapes of ``mapping`` (used to validate an HF checkpoint)."""
    h, d, f = hidden_size, geometry.kv_channels, geometry.ffn_hidden_size
    if mapping.combine == VOCAB:
        return ((geometry.hf_vocab_rows, h),)
    if mapping.combine == QKV:
        kv = geometry.num_query_groups * d
        return ((geometry.num_attention_heads * d, h), (kv, h), (kv, h))
    if mapping.combine == GATE_UP:
        return ((f, h), (f, h))
    name = mapping.megatron
    if name.endswith("linear_proj.weight"):
        return ((h, geometry.num_attention_heads * d),)
    if name.endswith("linear_fc2.weight"):
        return ((h, f),)
    return ((h,),)  # norms
