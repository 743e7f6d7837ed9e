"""Layout-independent initialisation: shards at any TP are slices of one canonical tensor."""

import math

import pytest
import torch

from megatron_dscoder.model.weight_init import _canonical_name, _global_indices, _key, _normal


def shard_param(full: torch.Tensor, dim: int, rank: int, tp: int, gated: bool = False):
    if gated:
        gate, up = full.chunk(2)
        local = torch.cat([gate.chunk(tp)[rank], up.chunk(tp)[rank]])
    else:
        local = full.chunk(tp, dim=dim)[rank]
    p = torch.nn.Parameter(torch.empty_like(local))
    p.tensor_model_parallel, p.partition_dim = True, dim
    return p, local


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize(
    ("name", "dim", "gated"),
    [
        ("decoder.layers.0.self_attention.linear_qkv.weight", 0, False),
        ("decoder.layers.0.mlp.linear_fc1.weight", 0, True),
        ("decoder.layers.0.mlp.linear_fc2.weight", 1, False),
        ("embedding.word_embeddings.weight", 0, False),
    ],
)
def test_shards_are_slices_of_the_canonical_tensor(tp, name, dim, gated):
    full_shape = (16, 24)
    key = _key(3, name)
    full = _normal(torch.arange(16 * 24), key).float().view(full_shape)
    for rank in range(tp):
        p, expected = shard_param(full, dim, rank, tp, gated)
        idx = torch.cat([i.reshape(-1) for i in _global_indices(p, name, rank, tp)])
        got = _normal(idx, key).float().view_as(expected)
        assert torch.equal(got, expected)


def test_samples_are_standard_normal_and_seed_dependent():
    x = _normal(torch.arange(200_000), _key(1, "w")).float()
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
    assert abs(float((x**4).mean()) - 3) < 0.1  # kurtosis of a normal
    y = _normal(torch.arange(200_000), _key(2, "w")).float()
    assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < 0.01
    z = _normal(torch.arange(200_000), _key(1, "v")).float()
    assert not torch.equal(x, z)
    assert math.isfinite(float(_normal(torch.tensor([0, 2**32 - 1]), 0).abs().max()))


def test_pipeline_stage_layers_use_global_index():
    assert (
        _canonical_name("decoder.layers.1.mlp.linear_fc1.weight", {0: 2, 1: 3})
        == "decoder.layers.3.mlp.linear_fc1.weight"
    )
    assert _canonical_name("output_layer.weight", {}) == "output_layer.weight"
