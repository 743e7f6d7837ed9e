"""tools/train_tokenizer.py, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from megatron_dscoder.tokenizer import SPECIAL_TOKENS, load_tokenizer, special_token_ids, vocab_size

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
