"""Logits parity: the converted model must compute what the source computes.

Both models run on CPU in fp32 on the same fixed token ids: megatron-core's ``GPTModel`` (local
spec, TP=PP=1; torch_dist reshards whatever layout wrote the checkpoint) and transformers'
``LlamaForCausalLM`` loaded offline from the HF directory. The result is the maximum absolute
difference over the HF vocabulary's logits. This holds both models in memory: it is a check for
toy and mid-size models, or a machine with the RAM for two fp32 copies.

    diff = max_abs_logits_diff(ckpt_dir, hf_dir, arch, vocab_rows=32256)
"""

from __future__ import annotations

from pathlib import Path

import torch

from megatron_dscoder.model.registry import ModelArch


def fixed_token_ids(vocab: int, length: int = 32) -> torch.Tensor:
    """Deterministic, spread-out ids ``[1, length]`` below ``vocab`` (no RNG involved)."""
    positions = torch.arange(length, dtype=torch.int64)
    return ((positions * 7919 + 13) % vocab).unsqueeze(0)


@torch.no_grad()
def hf_logits(hf_dir: str | Path, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits ``[1, s, vocab_size]`` of an HF causal LM directory (offline, no remote code)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32, local_files_only=True
    )
    model.eval()
    logits = model(input_ids=ids).logits
    del model
    return logits.float()


@torch.no_grad()
def megatron_logits(ckpt_dir: str | Path, arch: ModelArch, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits ``[1, s, padded vocab]`` of a torch_dist checkpoint, loaded at TP=PP=1."""
    from megatron_dscoder.checkpointing import checkpoint as checkpointing
    from megatron_dscoder.convert.megatron import one_rank_group
    from megatron_dscoder.model.build import build_model, transformer_config

    with one_rank_group():
        model = build_model(arch, transformer_config(arch), attention_backend="unfused")
        checkpointing.load_checkpoint(ckpt_dir, model=[model], optimizer=None, load_rng=False)
        model.eval()
        positions = torch.arange(ids.shape[1], dtype=torch.int64).unsqueeze(0)
        logits = model(input_ids=ids, position_ids=positions, attention_mask=None)
    return logits.float()


def max_abs_logits_diff(
    ckpt_dir: str | Path, hf_dir: str | Path, arch: ModelArch, vocab_rows: int, length: int = 32
) -> float:
    """Max |megatron - HF| over the first ``vocab_rows`` logits of fixed token ids."""
    ids = fixed_token_ids(
        min(arch.vocab_size, vocab_rows), min(length, arch.max_position_embeddings)
    )
    reference = megatron_logits(ckpt_dir, arch, ids)[..., :vocab_rows]
    converted = hf_logits(hf_dir, ids)[..., :vocab_rows]
    if reference.shape != converted.shape:
        raise ValueError(
            f"logits shapes differ: megatron {tuple(reference.shape)}, HF {tuple(converted.shape)}"
        )
    return (reference - converted).abs().max().item()
