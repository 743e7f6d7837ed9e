"""Small real fixtures for the conversion, generation and evaluation tests, built in seconds.

* :func:`make_tokenizer`: a byte-level BPE tokenizer trained on a few lines of Python, with
  DeepSeek-Coder's special tokens (found by string everywhere, so their ids need not match);
* :func:`make_hf_llama`: a random ``LlamaForCausalLM`` saved with ``save_pretrained``;
* :func:`debug_arch`: the registry's debug model (GQA) or its MHA variant, sized for a tokenizer;
* :func:`make_chain_model`: a ``LlamaForCausalLM`` whose greedy output is a chosen token chain;
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from megatron_dscoder.model.registry import MODELS, ModelArch, with_vocab_size
from megatron_dscoder.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "import os\nimport sys\n\nprint(os.getcwd(), sys.argv)\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
] * 20


def make_tokenizer(path: Path, vocab_size: int = 320) -> Path:
    """Train and save an HF tokenizer directory; returns ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    filler = vocab_size - tok.get_vocab_size(with_added_tokens=True)  # a small corpus saturates
    tok.add_tokens([f"<extra_{i}>" for i in range(filler)])
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": BOS,
                "eos_token": EOS,
                "pad_token": PAD,
                "add_bos_token": False,
                "model_max_length": 16384,
            }
        )
    )
    return path


def debug_arch(mha: bool, vocab_size: int, *, extended: bool = False) -> ModelArch:
    """The debug model (GQA: 4 heads in 2 groups) or its MHA variant, for ``vocab_size`` tokens."""
    arch = with_vocab_size(MODELS["debug"], vocab_size)
    if mha:
        arch = dataclasses.replace(arch, num_query_groups=arch.num_attention_heads)
    if extended:
        from megatron_dscoder.model.registry import with_long_context

        arch = with_long_context(arch, 4, 100000)
    return arch


def make_hf_llama(
    path: Path,
    *,
    mha: bool,
    vocab_rows: int,
    tokenizer: Path | None,
    seed: int = 0,
    dtype: str = "float32",
    rope_scaling: float | None = None,
    num_layers: int = 2,
) -> Path:
    """A random ``LlamaForCausalLM`` (debug dimensions) saved to ``path`` with the tokenizer."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_rows,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4 if mha else 2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}
        if rope_scaling is None
        else {"rope_type": "linear", "factor": rope_scaling, "rope_theta": 100000.0},
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norms so a swapped norm cannot go unnoticed
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    model.to(getattr(torch, dtype)).save_pretrained(str(path))
    if tokenizer is not None:
        for f in tokenizer.iterdir():
            shutil.copy2(f, path / f.name)
    return path


def make_chain_model(path: Path, tokenizer: Path, chain: list[int], *, loop: bool = False) -> Path:
    """A real ``LlamaForCausalLM`` whose greedy output after any prompt is exactly ``chain``.

    Its attention and MLP outputs are zero, so the last hidden state is the current token's
    embedding: ordinary tokens embed as ``e0`` and ``chain[i]`` as ``e(i+1)``; the output layer
    maps ``e0 -> chain[0]`` and ``e(i+1) -> chain[i+1]``. With ``loop`` the last chain token
    predicts itself forever (generation then ends only at ``max_new_tokens``).
    """
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from megatron_dscoder.tokenizer import load_tokenizer, vocab_size

    rows = vocab_size(load_tokenizer(tokenizer))
    config = LlamaConfig(
        vocab_size=rows,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.norm.weight.fill_(1.0)
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb[:, 0] = 1.0
        for i, token in enumerate(chain):
            if i + 1 < len(chain) or loop:
                emb[token] = 0.0
                emb[token, i + 1] = 1.0
            head[token, i] = 1.0
        if loop:
            head[chain[-1], len(chain)] = 1.0
    model.save_pretrained(str(path))
    for f in tokenizer.iterdir():
        shutil.copy2(f, path / f.name)
    return path
