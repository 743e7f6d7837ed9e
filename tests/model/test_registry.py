"""The size registry: parameter counts match the names, padding, and the 16K recipe."""

import pytest

from megatron_dscoder.model.registry import MODELS, get_model, with_long_context

NOMINAL = {"1.3b": 1.35e9, "6.7b": 6.74e9, "33b": 33.3e9}


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_parameter_count_matches_name(name):
    assert MODELS[name].num_parameters() == pytest.approx(NOMINAL[name], rel=0.01)


def test_published_dimensions():
    m = MODELS["33b"]
    assert (
        m.hidden_size,
        m.num_layers,
        m.num_attention_heads,
        m.num_query_groups,
        m.ffn_hidden_size,
        m.kv_channels,
    ) == (7168, 62, 56, 8, 19200, 128)
    assert MODELS["1.3b"].num_query_groups == MODELS["1.3b"].num_attention_heads  # MHA
    for m in MODELS.values():
        assert m.layernorm_epsilon == 1e-6
        assert m.rotary_base == 10000 and m.seq_len_interpolation_factor is None


def test_debug_model_keeps_gqa():
    m = MODELS["debug"]
    assert m.num_query_groups < m.num_attention_heads
    assert m.num_parameters() < 1_000_000


@pytest.mark.parametrize("tp", [1, 2, 4, 8, 16])
def test_deepseek_vocab_pads_to_published_rows_at_every_tp(tp):
    assert MODELS["6.7b"].padded_vocab_size(tp) == 32256
    assert MODELS["6.7b"].padded_vocab_size(tp) % (128 * min(tp, 2)) == 0


def test_extend_context_recipe():
    long = with_long_context(MODELS["6.7b"], 4, 100000)
    assert (long.max_position_embeddings, long.rotary_base, long.seq_len_interpolation_factor) == (
        16384,
        100000,
        4.0,
    )
    assert long.num_parameters() == MODELS["6.7b"].num_parameters()


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model '7b'.*debug, 1.3b, 6.7b, 33b"):
        get_model("7b")
