"""The key mapping's tensor reshuffles, checked against hand-built layouts (no checkpoints)."""

from __future__ import annotations

import pytest
import torch

from megatron_dscoder.convert.keymap import (
    GATE_UP,
    MAPPINGS,
    QKV,
    Geometry,
    hf_names,
    hf_shapes,
    hf_tensors,
    interleave_qkv,
    megatron_shape,
    megatron_slice,
    pad_vocab,
    split_qkv,
    stacked_key,
    trim_vocab,
)

H, D = 8, 2


def _geometry(heads: int, groups: int) -> Geometry:
    return Geometry(
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=D,
        ffn_hidden_size=6,
        hf_vocab_rows=10,
    )


def test_qkv_is_interleaved_per_query_group():
    # 4 query heads in 2 groups, head dim 2: rows of q are 0..7, k 100..103, v 200..203.
    q = torch.arange(8.0)[:, None].expand(8, H)
    k = (100 + torch.arange(4.0))[:, None].expand(4, H)
    v = (200 + torch.arange(4.0))[:, None].expand(4, H)
    fused = interleave_qkv(q, k, v, num_groups=2)
    assert fused[:, 0].tolist() == [0, 1, 2, 3, 100, 101, 200, 201, 4, 5, 6, 7, 102, 103, 202, 203]
    back = split_qkv(fused, _geometry(4, 2))
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v), strict=True))


@pytest.mark.parametrize("heads, groups", [(4, 4), (4, 2), (4, 1), (8, 2)])
def test_qkv_round_trip(heads, groups):
    g = _geometry(heads, groups)
    q, k, v = torch.randn(heads * D, H), torch.randn(groups * D, H), torch.randn(groups * D, H)
    fused = interleave_qkv(q, k, v, groups)
    assert fused.shape == (groups * g.qkv_group_rows, H)
    assert all(torch.equal(a, b) for a, b in zip(split_qkv(fused, g), (q, k, v), strict=True))


def test_vocab_pad_and_trim():
    w = torch.randn(10, H)
    padded = pad_vocab(w, 16)
    assert padded.shape == (16, H) and torch.all(padded[10:] == 0)
    assert torch.equal(trim_vocab(padded, 10), w)
    with pytest.raises(ValueError):
        pad_vocab(w, 8)


def _hf_model(g: Geometry, layers: int = 2) -> dict[str, torch.Tensor]:
    tensors = {}
    for m in MAPPINGS:
        for layer in range(layers) if m.per_layer else [None]:
            for name, shape in zip(hf_names(m, layer), hf_shapes(m, H, g), strict=True):
                tensors[name] = torch.randn(shape)
    return tensors


@pytest.mark.parametrize("heads, groups, tp", [(4, 4, 2), (4, 2, 2), (8, 2, 2), (4, 4, 4)])
def test_tp_chunks_are_slices_of_the_whole_megatron_tensor(heads, groups, tp):
    """Each chunk a TP rank stores equals that slice of the full tensor, and the full tensor
    maps back to the HF tensors exactly."""
    g = _geometry(heads, groups)
    hf = _hf_model(g)

    def read(name, index):
        return hf[name][index or (slice(None),)]

    rows = 16  # padded vocabulary: 10 HF rows + 6 zero rows
    for m in MAPPINGS:
        layer = 1 if m.per_layer else None
        shape = megatron_shape(m, H, g, rows)
        if m.tp_axis is None:
            full = megatron_slice(m, layer, 0, 0, read, g)
        else:
            full = megatron_slice(m, layer, 0, shape[m.tp_axis], read, g)
        assert tuple(full.shape) == shape, m.megatron
        if m.tp_axis is not None:
            # chunk boundaries as megatron-core stores them (fc1: each half split separately)
            halves = 2 if m.combine == GATE_UP else 1
            size = shape[m.tp_axis] // (tp * halves)
            for start in range(0, shape[m.tp_axis], size):
                chunk = megatron_slice(m, layer, start, start + size, read, g)
                assert torch.equal(chunk, full.narrow(m.tp_axis, start, size)), m.megatron
        if m.combine == QKV:  # TP ranks hold whole query groups
            assert (shape[0] // tp) % g.qkv_group_rows == 0
        back = hf_tensors(m, layer, full, g)
        assert back.keys() == set(hf_names(m, layer))
        for name, tensor in back.items():
            assert torch.equal(tensor, hf[name]), name
        if m.megatron.startswith("embedding"):
            assert torch.all(full[10:] == 0)


def test_mapping_covers_every_llama_weight_once():
    g = _geometry(4, 2)
    names = [n for m in MAPPINGS for n in hf_names(m, 0)]
    assert len(names) == len(set(names)) == 2 + 9 + 1
    assert {stacked_key(m.megatron) for m in MAPPINGS if m.per_layer} == {
        "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
        "decoder.layers.self_attention.linear_qkv.weight",
        "decoder.layers.self_attention.linear_proj.weight",
        "decoder.layers.mlp.linear_fc1.layer_norm_weight",
        "decoder.layers.mlp.linear_fc1.weight",
        "decoder.layers.mlp.linear_fc2.weight",
    }
    assert sum(len(hf_shapes(m, H, g)) for m in MAPPINGS) == len(names)
