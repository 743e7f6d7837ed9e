"""Megatron <-> Hugging Face conversion, end to end, on real parts.

Random-weight debug models (GQA and MHA, and a 16K RoPE-scaled one) are saved by the training
loop's checkpointing at TP=1, TP=2 and PP=2 under torchrun/gloo; random HF ``LlamaForCausalLM``
models are saved by transformers. Every conversion is the real command line
(``tools/convert_checkpoint.py``), all of them in one interpreter to pay the imports once.

Acceptance: ``to-hf --check-logits`` within 1e-4 (fp32) for each layout; HF -> megatron -> HF
bit-identical; a non-Llama config, a missing shard and a too-large tokenizer fail with a clear
message and write nothing. Also: exports of one model from three layouts are identical, the
from-hf checkpoint is chunked exactly like megatron-core's own TP=2 save, and conversion streams.
The cases run once per session (:mod:`tests.convert.runs`); the BOS-policy, v1.5 and
tokenizer checks are in ``tests/convert/test_export_fidelity.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.convert.conftest import TOKENS
from tests.convert.runs import ROWS, SAVES, SOURCES, hf_tensors, logits_diff, ok


@pytest.mark.parametrize("name", list(SAVES))
def test_to_hf_logits_match(runs, name):
    diff = logits_diff(ok(runs, f"export_{name}"))
    assert diff <= 1e-4, (name, diff)


def test_export_is_independent_of_the_saving_layout(runs):
    for kind in ("gqa", "mha"):
        ref = hf_tensors(runs.hf / f"{kind}_tp1")
        assert len(ref) == 2 + 4 * 9 + 1
        for layout in ("tp2", "pp2"):
            got = hf_tensors(runs.hf / f"{kind}_{layout}")
            assert got.keys() == ref.keys()
            for key in ref:
                assert torch.equal(got[key], ref[key]), (kind, layout, key)


def test_export_loads_offline_with_transformers(runs, tokenizer_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from megatron_dscoder.tokenizer import BOS, EOS

    hf_dir = runs.hf / "gqa_tp2"
    config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.vocab_size == ROWS and config.num_key_value_heads == 2
    assert config.max_position_embeddings == 512
    assert config.rope_parameters["rope_type"] == "linear"
    assert config.rope_parameters["factor"] == 4.0
    assert config.rope_parameters["rope_theta"] == 100000.0
    raw = json.loads((hf_dir / "config.json").read_text())
    assert raw["rope_scaling"] == {"type": "linear", "factor": 4.0}  # DeepSeek's two keys
    assert raw["rope_theta"] == 100000 and isinstance(raw["rope_theta"], int)  # as DeepSeek's
    assert json.loads((runs.hf / "gqa_tp1" / "config.json").read_text())["rope_scaling"] is None
    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    assert len(tok) == TOKENS
    assert config.bos_token_id == tok.convert_tokens_to_ids(BOS)
    assert config.eos_token_id == tok.convert_tokens_to_ids(EOS)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True)
    assert model.lm_head.weight.shape == (ROWS, 64)


@pytest.mark.parametrize("name", list(SOURCES))
def test_hf_megatron_hf_is_bit_identical(runs, name):
    assert logits_diff(ok(runs, f"import_{name}")) <= 1e-4
    assert logits_diff(ok(runs, f"back_{name}")) <= 1e-4
    src, back = hf_tensors(runs.src / name), hf_tensors(runs.back / name)
    assert back.keys() == src.keys()
    for key in src:
        assert back[key].dtype == src[key].dtype, key
        assert torch.equal(back[key], src[key]), key
    index = json.loads((runs.back / name / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(src) and len(set(index["weight_map"].values())) > 2
    src_cfg = json.loads((runs.src / name / "config.json").read_text())
    back_cfg = json.loads((runs.back / name / "config.json").read_text())
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rms_norm_eps",
    ):
        assert back_cfg[key] == src_cfg[key], key
    from transformers import AutoConfig

    src_rope, back_rope = (
        AutoConfig.from_pretrained(str(d / name), local_files_only=True).rope_parameters
        for d in (runs.src, runs.back)
    )
    assert back_rope.items() >= src_rope.items()  # the same RoPE (the legacy form adds "type")
    theta = src_cfg["rope_parameters"]["rope_theta"]
    assert back_cfg["rope_theta"] == theta and type(back_cfg["rope_theta"]) is type(theta)
    assert (runs.back / name / "tokenizer.json").read_bytes() == (
        runs.src / name / "tokenizer.json"
    ).read_bytes()
    for key in ("bos_token_id", "eos_token_id"):  # the source's, not the tokenizer's lookup
        assert back_cfg[key] == src_cfg[key], key
    generation = "generation_config.json"
    src_gen = json.loads((runs.src / name / generation).read_text())
    src_gen.pop("transformers_version", None)
    back_gen = json.loads((runs.back / name / generation).read_text())
    assert back_gen == {**src_gen, "_from_model_config": True}
    if name == "hf_mha":
        assert back_cfg["eos_token_id"] == src_gen["eos_token_id"] == 32021


def test_pretrain_finetunes_from_an_imported_checkpoint(runs):
    """``pretrain --load DST --finetune`` (no --model) continues from a from-hf checkpoint."""
    ok(runs, "pretrain_finetune")
    records = [
        json.loads(line)
        for line in (runs.meg / "finetune.jsonl").read_text().splitlines()
        if line.strip()
    ]
    losses = [r["lm_loss"] for r in records if "lm_loss" in r]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses), records


def test_from_hf_checkpoint_is_what_pretrain_loads(runs):
    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )

    ckpt = find_latest_checkpoint(runs.meg / "hf_gqa16k_bf16")
    assert ckpt is not None and ckpt.name == "iter_0000000"
    meta = read_checkpoint_metadata(ckpt)
    assert meta["arch"]["num_query_groups"] == 2 and meta["arch"]["vocab_size"] == TOKENS
    assert meta["arch"]["rotary_base"] == 100000
    assert meta["arch"]["seq_len_interpolation_factor"] == 4.0
    assert meta["converted_from"]["tensor_model_parallel_size"] == 2
    from megatron_dscoder.model.registry import ModelArch

    assert ModelArch(**meta["arch"]).padded_vocab_size(2) == ROWS
    assert (Path(meta["tokenizer"]) / "tokenizer.json").is_file()
    from megatron_dscoder.checkpointing.checksums import MANIFEST, verify_manifest

    # written with a manifest like a trained checkpoint: loads verified, not "older version"
    assert (ckpt / MANIFEST).is_file() and verify_manifest(ckpt) == []


def test_from_hf_chunks_like_megatron_core(runs):
    """The streaming writer's TP=2 checkpoint has megatron-core's own keys and chunks."""
    from torch.distributed.checkpoint import FileSystemReader

    ok(runs, "reimport_gqa_tp2")

    def layout(root: Path) -> dict:
        iter_dir = next(p for p in root.iterdir() if p.name.startswith("iter_"))
        meta = FileSystemReader(str(iter_dir)).read_metadata().state_dict_metadata
        return {
            key: sorted((tuple(c.offsets), tuple(c.sizes)) for c in md.chunks)
            if hasattr(md, "chunks")
            else "bytes"
            for key, md in meta.items()
            if key.startswith(("embedding", "decoder", "output"))
        }

    ours, theirs = layout(runs.meg / "reimport_gqa_tp2"), layout(runs.ckpt / "gqa_tp2")
    assert ours.keys() == theirs.keys()
    assert ours == theirs


@pytest.mark.parametrize(
    "name, message",
    [
        ("err_not_llama", "not a Llama model (model_type='mistral'"),
        ("err_missing_shard", "missing safetensors shard(s) model-00002-of-"),
        ("err_missing_distcp", "shard missing"),
        ("err_tokenizer_to_hf", "the tokenizer has 480 tokens, more than the 384 rows"),
        (
            "err_tokenizer_from_hf",
            "the tokenizer has 480 tokens but the model's embedding has only 384",
        ),
    ],
)
def test_errors_are_clear_and_write_nothing(runs, name, message):
    result = runs.results[name]
    assert result["rc"] == 1, result
    assert message in result["stderr"], result["stderr"]
    out = runs.err / ("out_" + name.removeprefix("err_"))
    assert not out.exists()
    assert not list(runs.err.glob(".out_*")), "a temporary directory was left behind"


def test_export_without_checksums_needs_the_flag(runs):
    """A checkpoint whose checksum manifest is gone is refused before any work, as the trainer
    refuses it, and exported only with --allow-unverified-checkpoint."""
    refused = runs.results["err_unverified"]
    assert refused["rc"] == 2, refused
    assert refused["stderr"].startswith("error: ") and refused["stderr"].count("\n") == 1
    assert "checksums.json: missing" in refused["stderr"]
    assert "--allow-unverified-checkpoint" in refused["stderr"]
    assert not (runs.err / "out_x").exists()
    ok(runs, "unverified_allowed")
    assert (runs.hf / "unverified" / "config.json").is_file()


def test_conversion_streams(runs):
    """Peak memory above the pre-conversion RSS stays far below the model's size."""
    model_mb = runs.big_bytes / 2**20
    for name in ("big_from_hf", "big_to_hf"):
        result = ok(runs, name)
        growth = result["peak_mb"] - result["rss_before_mb"]
        print(f"{name}: model {model_mb:.0f} MB, peak RSS growth {growth:.0f} MB")
        assert growth < 0.35 * model_mb, (name, growth, model_mb)
    src, back = hf_tensors(runs.src / "big"), hf_tensors(runs.back / "big")
    assert all(torch.equal(src[k], back[k]) for k in src) and src.keys() == back.keys()
