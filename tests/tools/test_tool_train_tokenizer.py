"""tools/train_tokenizer.py, run as a user would: real training, and every user mistake
refused in one line (exit 2 before work, 1 when the inputs hold no text to train on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dscoder.preprocess.tokenizer.cli import main as train_main
from megatron_dscoder.tokenizer import SPECIAL_TOKENS, load_tokenizer, special_token_ids, vocab_size
from tests.conftest import stdlib_texts

REPO = Path(__file__).resolve().parents[2]


def test_cli_trains_from_checkouts_and_jsonl(tmp_path: Path) -> None:
    repo = tmp_path / "checkouts" / "proj"
    repo.mkdir(parents=True)
    for i in range(30):
        (repo / f"m{i}.py").write_text(
            f"def function_{i}(value):\n    return value * {i} + 1\n" * 5
        )
    (tmp_path / "extra.jsonl").write_text('{"text": "int main(void) { return 0; }\\n"}\n' * 20)
    out = tmp_path / "tok"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "train_tokenizer.py"),
            "--input",
            str(tmp_path / "checkouts"),
            str(tmp_path / "extra.jsonl"),
            "--output",
            str(out),
            "--vocab-size",
            "400",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    tok = load_tokenizer(out)
    assert tok.get_vocab_size(with_added_tokens=False) <= 400 and vocab_size(tok) <= 409
    special_token_ids(
        tok, ("bos", "eos", "fim_hole", "fim_begin", "fim_end", "pad", "user", "assistant", "eot")
    )
    assert all(tok.token_to_id(s) is not None for s in SPECIAL_TOKENS)
    assert "function_" in tok.decode(tok.encode("function_7").ids)


def test_cli_requires_input_and_output() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--output", "x"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2 and "--input" in result.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tok_inputs")
    (root / "afile").write_text("")
    (root / "empty").mkdir()
    os.mkfifo(root / "fifo")
    jsonl = root / "code.jsonl"
    jsonl.write_text("".join(json.dumps({"text": text}) + "\n" for text in stdlib_texts()[:2]))
    return {"root": root, "jsonl": jsonl}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vocab-size", "0"], "--vocab-size must be > 0, got 0"),
        (["--vocab-size", "299"], "--vocab-size must be at least 300"),
        (["--vocab-size", "1000000000"], "--vocab-size must be at most 4194304"),
        (["--max-chars", "-1"], "--max-chars must be > 0"),
        (["--max-chars", "nan"], "--max-chars must be a finite number"),
        (["--max-chars", "inf"], "--max-chars must be a finite number"),
        (["--max-chars", "0.5"], "--max-chars must be at least 1"),
        (["--output", "{root}/afile"], "--output {root}/afile is not a directory"),
        (["--output", "{root}/afile/tok"], "--output {root}/afile/tok: {root}/afile is not a"),
        (["--input", "{root}/missing"], "--input {root}/missing: no such file or directory"),
        (["--input", "{root}/fifo"], "--input {root}/fifo: not a regular file or a directory"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_user_mistakes_are_one_line_before_work(inputs, capsys, argv, message) -> None:
    root = inputs["root"]
    base = {"--input": str(inputs["jsonl"]), "--output": str(root / "tok")}
    flags = dict(zip(argv[::2], (a.format(root=root) for a in argv[1::2]), strict=True))
    assert train_main([a for kv in {**base, **flags}.items() for a in kv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message.format(root=root)}") and err.count("\n") == 1, err
    assert not (root / "tok").exists()


def test_no_training_text_writes_no_tokenizer(inputs, capsys) -> None:
    root = inputs["root"]
    out = root / "tok_empty"
    assert train_main(["--input", str(root / "empty"), "--output", str(out)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: no training text in --input {root}/empty (no files found)\n"
    )
    tiny = root / "tiny.jsonl"
    tiny.write_text('{"text": "ab"}\n')
    assert train_main(["--input", str(tiny), "--output", str(out), "--no-filters"]) == 1
    assert "no BPE merge learned" in capsys.readouterr().err
    assert not out.exists()


def test_max_chars_stops_reading_after_whole_texts(inputs) -> None:
    two = inputs["root"] / "two.jsonl"
    texts = ["def first(x):\n    return x\n" * 20, "zqxv = zqxv + 1\n" * 50]
    two.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = inputs["root"] / "tok_two"
    argv = ["--input", str(two), "--output", str(out), "--vocab-size", "300", "--no-filters"]
    for max_chars, read_second in (("1", False), ("1e9", True)):
        assert train_main([*argv, "--max-chars", max_chars]) == 0
        merged = len(load_tokenizer(out).encode("zqxv", add_special_tokens=False).ids) < 4
        assert merged == read_second
