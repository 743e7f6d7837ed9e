"""Task -> records, with field names and bad records counted by reason."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from megatron_dscoder.preprocess.inputs.readers import FieldNames, read_chunk
from megatron_dscoder.preprocess.inputs.sources import JsonlBlob, ParquetRowGroup, RepoFiles


def test_default_and_the_stack_field_names() -> None:
    blob = (
        b'{"text": "a = 1\\n", "repo": "o/r", "path": "a.py", "lang": "Python"}\n'
        b'{"content": "int x;\\n", "max_stars_repo_name": "o/s", "max_stars_repo_path": "x.cpp",'
        b' "lang": "C++"}\n'
        b'{"text": "b\\n", "path": "b.cs"}\n'
    )
    records = read_chunk(JsonlBlob("in", blob, len(blob)), FieldNames(), 1 << 20, Counter())
    assert [(r.repo, r.path, r.lang) for r in records] == [
        ("o/r", "a.py", "python"),
        ("o/s", "x.cpp", "c++"),
        ("", "b.cs", "c#"),
    ]


def test_preferred_field_names() -> None:
    fields = FieldNames().with_preferred(text="code", repo="project")
    blob = b'{"code": "x\\n", "text": "ignored", "project": "p"}\n'
    [record] = read_chunk(JsonlBlob("in", blob, len(blob)), fields, 1 << 20, Counter())
    assert (record.text, record.repo) == ("x\n", "p")


def test_each_bad_record_reason() -> None:
    lines = [
        b"{bad json",
        b"[1, 2]",
        b'"string"',
        b'{"path": "x"}',
        b'{"text": null}',
        b'{"text": "\xff\xfe"}',
        b'{"text": "\\ud800"}',
        b'{"text": "a\\u0000b"}',
        b'{"text": ""}',
        b'{"text": "' + b"z" * 300 + b'"}',
        b'{"text": "fine\\n"}',
    ]
    blob = b"\n".join(lines) + b"\n\n"
    bad: Counter[str] = Counter()
    records = read_chunk(JsonlBlob("in", blob, len(blob)), FieldNames(), 200, bad)
    assert [r.text for r in records] == ["fine\n"]
    assert bad == Counter(
        malformed_json=1,
        not_an_object=2,
        missing_text=2,
        invalid_utf8=2,
        binary=1,
        empty=1,
        record_too_large=1,
    )


def test_parquet_string_and_binary_text(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "content": pa.array([b"x = 1\n", b"\xff", None, b"y = 2\n"], pa.binary()),
            "max_stars_repo_path": ["a.py", "b.py", "c.py", "d.js"],
        }
    )
    pq.write_table(table, path)
    bad: Counter[str] = Counter()
    records = read_chunk(ParquetRowGroup(str(path), 0, 0), FieldNames(), 1 << 20, bad)
    assert [(r.path, r.lang) for r in records] == [("a.py", "python"), ("d.js", "javascript")]
    assert bad == Counter(invalid_utf8=1, missing_text=1)


def test_checkout_files(tmp_path: Path) -> None:
    (tmp_path / "ok.java").write_text("class A {}\n")
    (tmp_path / "bin.c").write_bytes(b"\x00\x01")
    (tmp_path / "big.py").write_text("x" * 500)
    os.mkfifo(tmp_path / "pipe.py")  # swapped in after the walk: refused, never blocks
    (tmp_path / "link.py").symlink_to(tmp_path / "ok.java")
    names = ("ok.java", "bin.c", "big.py", "gone.py", "pipe.py", "link.py")
    task = RepoFiles(str(tmp_path), "repo", str(tmp_path), names, 0)
    bad: Counter[str] = Counter()
    [record] = read_chunk(task, FieldNames(), 100, bad)
    assert (record.repo, record.path, record.lang) == ("repo", "ok.java", "java")
    assert bad == Counter(binary=1, record_too_large=1, unreadable_file=3)
