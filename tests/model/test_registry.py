"""The size registry: parameter counts match the names, padding, and the 16K recipe."""

import dataclasses

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


def test_v15_is_deepseek_llm_7b():
    """DeepSeek LLM (arXiv 2401.02954) Table 2: 30 layers, d_model 4096, 32 heads (MHA), 4K,
    vocabulary 102,400; FFN 11008; the published checkpoint holds 6.91B parameters."""
    m = MODELS["7b-v1.5"]
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.num_query_groups) == (
        30,
        4096,
        32,
        32,
    )
    assert (m.ffn_hidden_size, m.rotary_base, m.max_position_embeddings) == (11008, 10000, 4096)
    assert m.padded_vocab_size() == 102400 and m.num_parameters() == 6_910_365_696
    assert m.num_parameters() == pytest.approx(6.91e9, rel=1e-3)
    tokenizer_sized = dataclasses.replace(m, vocab_size=100_015)  # a 100K tokenizer
    assert all(tokenizer_sized.padded_vocab_size(tp) == 102400 for tp in (1, 2, 4, 8))
