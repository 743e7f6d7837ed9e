"""``--ray-address`` where nothing answers is refused before any work, in one line (Ray itself
retries such an address for minutes)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from megatron_dscoder.preprocess.cli import main
from tests.launch import free_port


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("127.0.0.1:FREE", "nothing answers there (Connection refused)"),  # a free port
        ("127.0.0.1:99999", "nothing answers there"),
        ("headnode", "expected HOST:PORT, auto or ray://HOST:PORT"),
    ],
)
def test_a_ray_address_where_nothing_answers(
    tmp_path: Path, tiny_tokenizer_dir: Path, address: str, says: str
) -> None:
    address = address.replace("FREE", str(free_port()))  # chosen here: ids stay the same
    corpus = tmp_path / "a.jsonl"
    corpus.write_text('{"text": "x = 1\\n"}\n')
    argv = ["--engine", "ray", "--ray-address", address, "--input", str(corpus)]
    argv += ["--tokenizer-model", str(tiny_tokenizer_dir), "--output-prefix", str(tmp_path / "o")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    line = err.getvalue().splitlines()[-1]
    assert line.startswith(f"error: --ray-address {address}") and says in line, err.getvalue()
    assert not list(tmp_path.glob("o*"))
