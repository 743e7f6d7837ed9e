"""Inputs a user gets wrong: a missing path, a Parquet file without text, a UTF-8 BOM.

A missing ``--input`` or a Parquet file without the text column is refused before any work
(naming the path, and ``--text-field`` with the columns found); a BOM is stripped where it opens
a JSONL line or a file, so the first record is kept and no sample starts with U+FEFF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.data.indexed import read_documents
from megatron_dscoder.paths import OutputPathError
from megatron_dscoder.preprocess.inputs.sources import InputError
from tests.preprocess.preprocess_helpers import decode, run, tokenizer, write_jsonl

FAST = {"dedup": None, "decontam": None, "fim_rate": 0.0}


def test_a_missing_input_is_an_error_before_any_work(tmp_path: Path, tiny_tokenizer_dir) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", [{"text": "x = 1\n", "path": "a.py"}])
    with pytest.raises(InputError, match=r"--input .*b\.jsnol: no such file or directory"):
        run(tmp_path, [good, tmp_path / "b.jsnol"], tiny_tokenizer_dir, **FAST)
    assert not (tmp_path / "out").exists()


def test_parquet_without_the_text_column_names_the_flag_and_columns(
    tmp_path: Path,
    tiny_tokenizer_dir,
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"code": ["x = 1\n"], "repo_name": ["r"]}), path)
    with pytest.raises(InputError, match=r"--text-field.*columns found: code, repo_name"):
        run(tmp_path, [path], tiny_tokenizer_dir, **FAST)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prefix", ["out/", "out", "file.txt/data"])
def test_an_output_prefix_that_names_no_file_is_refused_up_front(
    tmp_path: Path,
    tiny_tokenizer_dir,
    prefix: str,
) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", [{"text": "x = 1\n", "path": "a.py"}])
    (tmp_path / "out").mkdir()
    (tmp_path / "file.txt").write_text("not a directory")
    with pytest.raises(OutputPathError, match="directory"):
        run(tmp_path, [good], tiny_tokenizer_dir, prefix=str(tmp_path / prefix), **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "file.txt", "out"]
    assert not any((tmp_path / "out").iterdir())


def test_a_utf8_bom_is_stripped_in_jsonl_and_in_files(tmp_path: Path, tiny_tokenizer_dir) -> None:
    jsonl = tmp_path / "bom.jsonl"
    lines = [
        b'{"text": "def first():\\n    return 1\\n", "path": "first.py"}',
        b'{"text": "def second():\\n    return 2\\n", "path": "second.py"}',
    ]
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    checkout = tmp_path / "repos" / "r1"
    checkout.mkdir(parents=True)
    (checkout / "bommed.js").write_bytes(b"\xef\xbb\xbffunction third() {\n  return 3;\n}\n")
    stats = run(tmp_path, [jsonl, tmp_path / "repos"], tiny_tokenizer_dir, **FAST)
    assert stats["documents_in"] == 3 and not stats["bad_input"], stats["bad_input"]
    tokens, lengths = read_documents(str(tmp_path / "out" / "data"))
    docs = np.split(tokens, np.cumsum(lengths)[:-1])
    texts = [decode(tokenizer(tiny_tokenizer_dir), d) for d in docs]
    assert len(texts) == 3 and not any("\ufeff" in t for t in texts)
    assert any("def first()" in t for t in texts) and any("function third()" in t for t in texts)
