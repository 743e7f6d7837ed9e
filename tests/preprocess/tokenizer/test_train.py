"""The trained tokenizer and the tokenizer module: special tokens by string, splits, HF loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken

from megatron_dscoder.preprocess.tokenizer.train import new_tokenizer, train_tokenizer
from megatron_dscoder.tokenizer import (
    BOS,
    EOS,
    FIM_BEGIN,
    FIM_END,
    FIM_HOLE,
    SPECIAL_TOKENS,
    MissingSpecialTokensError,
    load_tokenizer,
    special_token_ids,
    vocab_size,
)


def test_special_token_strings_are_deepseeks() -> None:
    assert [hex(ord(c)) for c in BOS[1] + BOS[7]] == ["0xff5c", "0x2581"]
    assert SPECIAL_TOKENS == (
        "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>",
        "<\uff5cfim\u2581hole\uff5c>",
        "<\uff5cfim\u2581begin\uff5c>",
        "<\uff5cfim\u2581end\uff5c>",
        "<pad>",
        "<|User|>",
        "<|Assistant|>",
        "<|EOT|>",
    )


def test_special_tokens_follow_the_bpe_vocabulary(tiny_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer_dir)
    bpe_size = tok.get_vocab_size(with_added_tokens=False)
    ids = special_token_ids(
        tok, ("bos", "eos", "fim_hole", "fim_begin", "fim_end", "pad", "user", "assistant", "eot")
    )
    assert list(vars(ids).values()) == list(range(bpe_size, bpe_size + 9))
    assert vocab_size(tok) == bpe_size + 9 and ids.has_fim


def test_structure_is_deepseeks(tiny_tokenizer_dir: Path) -> None:
    """DeepSeek's flags (only BOS and EOS special), order, and "a b" merges; all 256 bytes."""
    state = json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text("utf-8"))
    added = [(t["content"], t["special"]) for t in state["added_tokens"]]
    assert added == [(s, s in (BOS, EOS)) for s in SPECIAL_TOKENS]
    merges = state["model"]["merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    tok = load_tokenizer(tiny_tokenizer_dir)
    for text in ("ö ÿ õ", "naïve — 日本"):  # DeepSeek's Latin-1 added tokens decode to U+FFFD
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_pre_tokenizer_splits(tiny_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer_dir)
    digits = tok.encode("x = 20240117\n", add_special_tokens=False).tokens
    assert [t for t in digits if t.isdigit()] == list("20240117")
    pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("a\n\nb, c")]
    assert pieces == ["a", "Ċ", "Ċ", "b", ",", "Ġc"]
    assert tok.encode("x", add_special_tokens=True).tokens[0] == BOS


def test_auto_tokenizer_loads_offline(tiny_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir), local_files_only=True)
    tok = load_tokenizer(tiny_tokenizer_dir)
    text = "def f(x):\n    return x + 1  # 42\n"
    assert (
        hf(text, add_special_tokens=False)["input_ids"]
        == tok.encode(text, add_special_tokens=False).ids
    )
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (BOS, EOS, "<pad>")
    assert hf.convert_tokens_to_ids(FIM_BEGIN) == tok.token_to_id(FIM_BEGIN)
    assert hf(text)["input_ids"][0] == tok.token_to_id(BOS)
    assert hf.convert_tokens_to_ids(FIM_HOLE) == tok.token_to_id(FIM_HOLE)
    assert (
        json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text())["eos_token"] == EOS
    )


def test_ids_are_found_by_string_not_position() -> None:
    tok = new_tokenizer()
    tok.add_special_tokens(
        [AddedToken(s, special=True) for s in (FIM_END, EOS, FIM_BEGIN, FIM_HOLE)]
    )
    ids = special_token_ids(tok, ("eos", "fim_begin", "fim_hole", "fim_end"))
    assert (ids.fim_end, ids.eos, ids.fim_begin, ids.fim_hole) == (0, 1, 2, 3)
    assert ids.bos is None and ids.pad is None


def test_missing_tokens_are_named() -> None:
    tok = new_tokenizer()
    tok.add_special_tokens([AddedToken(EOS, special=True)])
    with pytest.raises(MissingSpecialTokensError) as err:
        special_token_ids(tok, ("eos", "fim_begin", "pad"), source="tok X", purpose="FIM")
    assert err.value.missing == (FIM_BEGIN, "<pad>")
    assert (
        str(err.value)
        == f"tok X lacks the special token(s) '{FIM_BEGIN}', '<pad>' (needed for FIM)"
    )
    with pytest.raises(KeyError):
        special_token_ids(tok, ("eos_token",))


def test_load_tokenizer_paths(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    file_tok = load_tokenizer(tiny_tokenizer_dir / "tokenizer.json")
    assert file_tok.get_vocab_size() == load_tokenizer(tiny_tokenizer_dir).get_vocab_size()
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nowhere")


def test_vocab_size_argument() -> None:
    tok = train_tokenizer(["def f():\n    return 1\n" * 50, "class A:\n    pass\n" * 50], 300)
    assert tok.get_vocab_size(with_added_tokens=False) <= 300
    with pytest.raises(ValueError):
        train_tokenizer(["x"], 100)


def test_deepseek_llm_layout_has_bos_and_eos_only(tmp_path: Path) -> None:
    """DeepSeek-Coder-v1.5's structure: the BPE ids, then BOS and EOS; no FIM, no pad."""
    from megatron_dscoder.preprocess.tokenizer.train import save_tokenizer_dir
    from tests.conftest import stdlib_texts

    tok = train_tokenizer(stdlib_texts()[:2], vocab_size=600, layout="deepseek-llm")
    bpe = tok.get_vocab_size(with_added_tokens=False)
    assert (tok.token_to_id(BOS), tok.token_to_id(EOS)) == (bpe, bpe + 1)
    assert vocab_size(tok) == bpe + 2
    assert not special_token_ids(tok, ()).has_fim and special_token_ids(tok, ()).pad is None
    out = save_tokenizer_dir(tok, tmp_path / "llm")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"]) == (BOS, EOS) and "pad_token" not in config
    with pytest.raises(ValueError, match="unknown layout"):
        train_tokenizer(["x"], layout="llama")
