"""Conversion runs that follow DeepSeek's published artifacts: the BOS policy from the data to
generation, a DeepSeek-Coder v1.5 (DeepSeek-LLM-7B-shaped) import continued with its recipe and
exported, and a tokenizer that is not the checkpoint's refused before anything is built. The
cases run with the others, once per session (:mod:`tests.convert.runs`)."""

from __future__ import annotations

import json

import pytest

from tests.convert.runs import TOKENS_TEXT, logits_diff, ok


def test_bos_policy_from_data_to_generation(runs, tokenizer_dir):
    """Trained without (the default) and with ``--bos``: the data's stats, the checkpoint, every
    file of the export, generation and evaluation say the same; the first prompt id is BOS
    exactly for the ``--bos`` model, and equals what ``AutoTokenizer`` gives."""
    from transformers import AutoTokenizer

    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )
    from megatron_dscoder.evaluation.generate import Generator
    from megatron_dscoder.evaluation.humaneval import load_hf_model
    from megatron_dscoder.tokenizer import BOS, load_tokenizer

    bos_id = load_tokenizer(tokenizer_dir).token_to_id(BOS)
    prompt = "def add(a, b):\n"
    for bos in (False, True):
        ok(runs, f"train_bos_{int(bos)}")
        ok(runs, f"export_bos_{int(bos)}")
        assert json.loads((runs.data / f"bos_{int(bos)}.json").read_text())["bos"] is bos
        meta = read_checkpoint_metadata(find_latest_checkpoint(runs.meg / f"train_bos_{int(bos)}"))
        assert meta["data"]["bos"] is bos
        export = runs.hf / f"train_bos_{int(bos)}"
        assert json.loads((export / "tokenizer_config.json").read_text())["add_bos_token"] is bos
        ids = Generator(export).prompt_ids(prompt)
        assert (ids[0] == bos_id) is bos, (bos, ids[:3])
        hf_ids = AutoTokenizer.from_pretrained(str(export), local_files_only=True)(prompt)
        assert hf_ids["input_ids"] == ids
        assert load_hf_model(str(export), temperature=0.0, dtype="float32").generator.add_bos is bos
        assert (Generator(export, add_bos=not bos).prompt_ids(prompt)[0] == bos_id) is not bos
    assert runs.results["err_bos_on_plain_data"]["rc"] == 2
    assert not (runs.err / "out_bos").exists()


def test_v15_imports_continues_with_the_recipe_and_exports(runs):
    """A DeepSeek-Coder-v1.5-shaped model (102,400 rows, DeepSeek-LLM's tokenizer structure)
    through from-hf, two iterations of ``--stage continue-pretrain``, and to-hf."""
    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )

    assert logits_diff(ok(runs, "import_v15")) <= 1e-4
    ok(runs, "continue_v15")
    meta = read_checkpoint_metadata(find_latest_checkpoint(runs.meg / "v15_continued"))
    assert meta["iteration"] == 2 and meta["train"]["lr"] == pytest.approx(4.2e-4)
    assert meta["train"]["train_tokens"] == 2e12 and meta["data"]["bos"] is False
    assert logits_diff(ok(runs, "export_v15")) <= 1e-4
    config = json.loads((runs.hf / "v15" / "config.json").read_text())
    assert config["vocab_size"] == 102400 and config["rope_theta"] == 10000.0
    assert config["rope_scaling"] is None and config["num_key_value_heads"] == 4


def test_a_tokenizer_not_the_checkpoints_is_refused_before_anything_is_built(runs):
    refused = runs.results["err_v15_coder_tokenizer"]
    assert refused["rc"] == 2, refused
    assert "--allow-vocab-mismatch" in refused["stderr"] and TOKENS_TEXT in refused["stderr"]
    assert not (runs.err / "out_v15").exists()
