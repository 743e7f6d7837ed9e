"""The registry of DeepSeek-Coder model sizes: the single source of every model dimension.

Field names are megatron-core's own (``TransformerConfig`` and ``GPTModel`` arguments), so a
Megatron user finds ``num_query_groups`` where they expect it. Launch scripts name a size
(``--model 33b``) and never repeat its dimensions.

Dimensions are from the DeepSeek-Coder paper (arXiv 2401.14196, Table 2) and the published
``LlamaForCausalLM`` configs: pre-norm RMSNorm (eps 1e-6), SwiGLU, no linear biases, untied
input/output embeddings, RoPE base 10000 for the 4K stage. The 16K context-extension stage is a
recipe derived from a size (:func:`with_long_context`, applied by
``megatron_dscoder.config.recipes.extend_context``), not a second table.

    >>> MODELS["1.3b"].num_parameters() / 1e9   # doctest: +ELLIPSIS
    1.34...
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

DEEPSEEK_CODER_VOCAB = 32022
"""``len(tokenizer)`` of DeepSeek-Coder's published tokenizer: 32,000 BPE ids + 22 added tokens."""
DEEPSEEK_LLM_VOCAB_ROWS = 102400
"""Embedding rows of DeepSeek-LLM-7B, hence of DeepSeek-Coder-v1.5 (DeepSeek LLM, Table 2:
vocabulary 102,400); its tokenizer (100K BPE ids + special tokens) is padded up to them."""


@dataclass(frozen=True, kw_only=True)
class ModelArch:
    """Architecture of one model size, in megatron-core's field names."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    """SwiGLU inner width: fc1 has ``2 * ffn_hidden_size`` rows (gate and up)."""
    num_attention_heads: int
    num_query_groups: int
    """KV heads (GQA groups); equal to ``num_attention_heads`` for multi-head attention."""
    max_position_embeddings: int = 4096
    """Longest sequence the RoPE setting is trained for (GPTModel's ``max_sequence_length``)."""
    rotary_base: int = 10000
    seq_len_interpolation_factor: float | None = None
    """Linear position interpolation (RoPE scaling) factor; ``None`` means no scaling."""
    vocab_size: int = DEEPSEEK_CODER_VOCAB
    """Tokenizer length; embedding rows are :meth:`padded_vocab_size`."""
    make_vocab_size_divisible_by: int = 256
    layernorm_epsilon: float = 1e-6
    init_method_std: float = 0.006
    """DeepSeek LLM's initialisation std (the Coder paper follows DeepSeek LLM)."""

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_query_groups={self.num_query_groups}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )

    @property
    def kv_channels(self) -> int:
        """Head dimension (128 for every published size)."""
        return self.hidden_size // self.num_attention_heads

    def padded_vocab_size(self, tensor_model_parallel_size: int = 1) -> int:
        """Embedding rows: the vocabulary rounded up to a multiple of the divisor and of TP.

        Megatron-LM pads to ``128 * TP``, which makes the row count (and so the checkpoint's
        shapes and the softmax) depend on the parallel layout. We pad to a multiple of
        ``make_vocab_size_divisible_by`` (256 = 128 x 2) that TP also divides, so DeepSeek's
        32,022 tokens give the published 32,256 rows at every TP up to 256, and checkpoints
        reshard across TP without touching the vocabulary.
        """
        multiple = math.lcm(self.make_vocab_size_divisible_by, tensor_model_parallel_size)
        return -(-self.vocab_size // multiple) * multiple

    def num_parameters(self, tensor_model_parallel_size: int = 1) -> int:
        """Total parameter count (untied embeddings), independent of the parallel layout."""
        h, d = self.hidden_size, self.kv_channels
        qkv = h * (self.num_attention_heads + 2 * self.num_query_groups) * d
        per_layer = qkv + h * h + 3 * h * self.ffn_hidden_size + 2 * h
        embeddings = 2 * self.padded_vocab_size(tensor_model_parallel_size) * h
        return self.num_layers * per_layer + embeddings + h

    def num_layer_parameters(self) -> int:
        """Parameters of one transformer layer (attention, SwiGLU MLP and the two norms)."""
        return (
            self.num_parameters()
            - 2 * self.padded_vocab_size() * self.hidden_size
            - self.hidden_size
        ) // self.num_layers


MODELS: dict[str, ModelArch] = {
    # Seconds per step on CPU, yet keeps every structural feature of the real sizes: GQA
    # (4 heads in 2 groups), SwiGLU, RMSNorm, RoPE, untied embeddings.
    "debug": ModelArch(
        num_layers=4,
        hidden_size=64,
        ffn_hidden_size=176,
        num_attention_heads=4,
        num_query_groups=2,
        max_position_embeddings=128,
        vocab_size=2048,
        make_vocab_size_divisible_by=128,
        init_method_std=0.02,
    ),
    "1.3b": ModelArch(
        num_layers=24,
        hidden_size=2048,
        ffn_hidden_size=5504,
        num_attention_heads=16,
        num_query_groups=16,
    ),
    "6.7b": ModelArch(
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=11008,
        num_attention_heads=32,
        num_query_groups=32,
    ),
    "33b": ModelArch(
        num_layers=62,
        hidden_size=7168,
        ffn_hidden_size=19200,
        num_attention_heads=56,
        num_query_groups=8,
    ),
    # DeepSeek-Coder-v1.5 = DeepSeek-LLM-7B continued on 2T tokens (DeepSeek-Coder paper §5;
    # dimensions from DeepSeek LLM, arXiv 2401.02954, Table 2: 30 layers, d_model 4096, 32 heads
    # MHA, 4K context, vocabulary 102,400; FFN 11008 and RoPE base 10000 as its HF config).
    # 6,910,365,696 parameters: the published checkpoint's 6.91B.
    "7b-v1.5": ModelArch(
        num_layers=30,
        hidden_size=4096,
        ffn_hidden_size=11008,
        num_attention_heads=32,
        num_query_groups=32,
        vocab_size=DEEPSEEK_LLM_VOCAB_ROWS,
        make_vocab_size_divisible_by=4096,  # a 100K-token tokenizer pads to the 102,400 rows
    ),
}
# The debug model at the real sizes' 4K-stage length: ``--stage extend-context`` takes it to
# 16,384 positions, so the 16K stage runs at its real length on a CPU (``debug`` itself stops at
# 128 -> 512, which keeps its default sequences short for tests).
MODELS["debug-4k"] = dataclasses.replace(MODELS["debug"], max_position_embeddings=4096)


def get_model(name: str) -> ModelArch:
    """Look a size up by name, with an error that lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def with_long_context(arch: ModelArch, factor: int, rotary_base: int) -> ModelArch:
    """The architecture with ``factor`` times the positions: RoPE base ``rotary_base`` with
    linear position interpolation. DeepSeek-Coder's values (x4, base 100000: the 4K model
    becomes a 16K model, paper §3.6) live once, in ``config.recipes.ContextExtension``."""
    return dataclasses.replace(
        arch,
        max_position_embeddings=arch.max_position_embeddings * factor,
        rotary_base=rotary_base,
        seq_len_interpolation_factor=float(factor),
    )


def with_vocab_size(arch: ModelArch, vocab_size: int) -> ModelArch:
    """The same architecture for another tokenizer (its ``len(tokenizer)``)."""
    return dataclasses.replace(arch, vocab_size=vocab_size)
