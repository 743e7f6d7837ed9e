"""dscoder-preprocess-sft on hostile input: no record loses the run, every skip is counted.

Byte order marks, bytes that are not UTF-8, lone surrogates, 100k-deep nesting, oversize and
truncated records, and files that wrap their records in an object; inputs that cannot be read at
all (a FIFO, compressed or UTF-16 files) and outputs that cannot be written are refused before
any work, in one line naming the flag and the file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.data.indexed import read_documents
from megatron_dscoder.instruct.cli import main as sft_main
from megatron_dscoder.instruct.encode import SFTEncoder, encode_arrays
from megatron_dscoder.instruct.read import (
    ArrayCutter,
    SFTStats,
    iter_lines,
    parse_record,
    read_records,
)
from megatron_dscoder.instruct.template import render
from megatron_dscoder.tokenizer import load_tokenizer

ALPACA = {"instruction": "Reverse a list.", "output": "xs[::-1]"}
CHAT = {
    "messages": [
        {"role": "user", "content": 'Quote "[{,}]" and \\ a backslash'},
        {"role": "assistant", "content": "print('\\\\', \"]\")"},
    ]
}
BOM = b"\xef\xbb\xbf"


def _line(record: object) -> bytes:
    return json.dumps(record).encode() + b"\n"


def _run(tmp: Path, tok: Path, inputs: list[Path], *extra: str) -> tuple[int, dict | None]:
    stats = tmp / "stats.json"
    stats.unlink(missing_ok=True)
    args = ["--input", *map(str, inputs), "--tokenizer-model", str(tok)]
    args += ["--output-prefix", str(tmp / "out" / "sft"), "--stats-json", str(stats), *extra]
    code = sft_main(args)
    return code, json.loads(stats.read_text()) if stats.exists() else None


def test_byte_order_marks_lose_no_record(tiny_tokenizer_dir, tmp_path):
    bom_jsonl = tmp_path / "bom.jsonl"
    bom_jsonl.write_bytes(BOM + _line(ALPACA) + _line(CHAT))
    bom_array = tmp_path / "bom_array.json"
    bom_array.write_bytes(BOM + json.dumps([ALPACA, CHAT, ALPACA], indent=1).encode())
    good = tmp_path / "good.json"
    good.write_text(json.dumps([CHAT]))
    code, stats = _run(tmp_path, tiny_tokenizer_dir, [bom_jsonl, bom_array, good])
    assert code == 0 and (stats["written"], stats["skipped"]) == (6, 0)
    code, stats = _run(tmp_path, tiny_tokenizer_dir, [bom_array])  # alone
    assert code == 0 and stats["written"] == 3
    tokens, lengths = read_documents(str(tmp_path / "out" / "sft"))
    assert lengths.size == 3 and tokens.size == lengths.sum()


def test_unusable_records_are_skipped_and_counted_by_reason_and_file(tiny_tokenizer_dir, tmp_path):
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(
        _line(ALPACA)
        + b'{"instruction": "\\ud800 lone", "output": "x"}\n'  # a lone surrogate
        + b'{"instruction": "caf\xe9", "output": "x"}\n'  # a Latin-1 byte
        + b"[" * 100_000
        + b"]" * 100_000
        + b"\n"  # too deep for any recursive parser
        + _line({**ALPACA, "output": "y" * 300_000})  # over --max-record-mb 0.25
        + b"{not json\n"
        + _line([ALPACA, "text"])  # a line of records: each is one
        + _line({"data": [ALPACA]})
        + _line(CHAT)
    )
    array = tmp_path / "truncated.json"
    array.write_text(json.dumps([ALPACA, CHAT, ALPACA])[:-10])
    code, stats = _run(tmp_path, tiny_tokenizer_dir, [jsonl, array], "--max-record-mb", "0.25")
    assert code == 0
    by_reason = {
        "invalid_utf8": 2,
        "too_deep": 1,
        "record_too_large": 1,
        "malformed_json": 1,
        "not_an_object": 1,
        "unknown_format": 1,
        "truncated_file": 1,
    }
    assert stats["skipped_by_reason"] == by_reason
    assert stats["skipped_by_file"] == {
        str(array): {"truncated_file": 1},
        str(jsonl): {k: v for k, v in by_reason.items() if k != "truncated_file"},
    }
    assert (stats["written"], stats["records"]) == (5, 5 + 8)
    _, lengths = read_documents(str(tmp_path / "out" / "sft"))
    assert lengths.size == 5


def test_a_file_of_one_object_is_one_record_and_a_wrapper_is_named(
    tiny_tokenizer_dir, tmp_path, capsys
):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(ALPACA, indent=2))
    assert _run(tmp_path, tiny_tokenizer_dir, [pretty])[1]["written"] == 1
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [ALPACA, CHAT]}, indent=2))
    capsys.readouterr()
    code, stats = _run(tmp_path, tiny_tokenizer_dir, [wrapped])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: no usable record")
    assert str(wrapped) in err and "unknown_format" in err and "its keys: 'data'" in err
    assert stats["skipped_by_reason"] == {"unknown_format": 1}  # written although nothing was
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_the_array_cutter_is_exact_at_every_chunk_boundary():
    records = [ALPACA, CHAT, {"x": [1, {"y": ']}\\"'}], "z": None}, "s,[{", 3.5, []]
    data = json.dumps(records).encode()
    for size in (1, 2, 3, 7, 64):
        cutter = ArrayCutter(1 << 20)
        out = []
        for i in range(1, len(data), size):  # after the opening bracket
            out += cutter.feed(data[i : i + size])
        assert [json.loads(e) for e in out] == records and cutter.done
    cutter = ArrayCutter(100)
    out = cutter.feed(json.dumps([ALPACA, {"big": "x" * 500}, [], ALPACA]).encode()[1:])
    assert [o if isinstance(o, str) else json.loads(o) for o in out] == [
        ALPACA,
        "record_too_large",
        [],
        ALPACA,
    ]
    assert ArrayCutter(100).feed(b"1,,2]") == [b"1", "malformed_json", b"2"]
    assert ArrayCutter(100).feed(b" ]") == []


def test_an_oversize_line_is_read_past_not_held():
    stream = io.BytesIO(b"a\n" + b"x" * (3 << 20) + b"\nb")
    assert list(iter_lines(stream, 1000)) == [(1, b"a\n"), (2, None), (3, b"b")]


def test_concatenated_arrays_and_jsonl_starting_with_an_array(tmp_path):
    two = tmp_path / "two.json"
    two.write_text(json.dumps([ALPACA]) + "\n" + json.dumps([CHAT, CHAT]) + "\n")
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(_line([ALPACA]) + _line(CHAT))
    stats = SFTStats()
    got = [(r.source, r.where) for r in read_records([two, lines], stats)]
    assert got[:1] == [(str(two), "line 1, element 1")] and len(got) == 3 + 2
    assert stats.skipped.total() == 0 and got[3] == (str(lines), "line 1, element 1")


def test_long_records_are_encoded_in_pieces_with_the_same_ids(tiny_tokenizer_dir):
    encoder = SFTEncoder(load_tokenizer(tiny_tokenizer_dir))
    assert encoder.chunk_chars is not None  # newline-safe: long runs are cut
    code = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(3000))
    record = {"instruction": "Write them.\n" * 2000, "output": code}
    assert len(code) > 4 * encoder.chunk_chars
    ids, mask = encoder.encode(record)
    pieces = render([{"role": "user", "content": record["instruction"]},
                     {"role": "assistant", "content": code}])  # fmt: skip
    whole_ids, whole_mask = encode_arrays(pieces, encoder.text_tok, encoder.control_ids, None)
    assert np.array_equal(ids, whole_ids) and np.array_equal(mask, whole_mask)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00rest"), "gzip-compressed"),
        (lambda p: p.write_bytes("[{}]".encode("utf-16")), "UTF-16"),
        (lambda p: None, "no such file or directory"),
    ],
    ids=["fifo", "directory", "gzip", "utf16", "missing"],
)
def test_unreadable_inputs_are_refused_before_work(
    tiny_tokenizer_dir, tmp_path, capsys, make, message
):
    path = tmp_path / "in.json"
    make(path)
    code, stats = _run(tmp_path, tiny_tokenizer_dir, [path])
    err = capsys.readouterr().err
    assert (code, stats) == (2, None)
    assert err == f"error: --input {path}: {err.split(': ', 2)[2]}" and message in err
    assert not (tmp_path / "out").exists()


def test_outputs_that_cannot_be_written_are_refused_before_work(
    tiny_tokenizer_dir, tmp_path, capsys
):
    good = tmp_path / "good.jsonl"
    good.write_bytes(_line(ALPACA))
    (tmp_path / "afile").write_text("")
    base = ["--input", str(good), "--tokenizer-model", str(tiny_tokenizer_dir)]
    cases = {
        ("--output-prefix", str(tmp_path / "dirx") + "/"): "must end in a file name prefix",
        ("--stats-json", str(tmp_path / "afile" / "s.json")): "is not a directory",
        ("--stats-json", str(good)): "would overwrite",
        ("--stats-json", str(tmp_path / "o" / "sft_mask.idx")): "would overwrite",
        ("--max-record-mb", "nan"): "--max-record-mb must be a finite number",
        ("--max-record-mb", "0"): "--max-record-mb must be > 0",
    }
    for (flag, value), message in cases.items():
        argv = [*base, "--output-prefix", str(tmp_path / "o" / "sft"), flag, value]
        assert sft_main(argv) == 2, (flag, value)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and flag in err, err
    assert good.read_bytes() == _line(ALPACA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "good.jsonl"]


def test_values_outside_strict_json_are_read_as_python_writes_them():
    assert parse_record(b'{"output": "x", "score": NaN, "n": 1e400}')[0]["output"] == "x"
    assert parse_record(b'{"score": NaN, "s": "\\ud800"}') == (
        None,
        ("invalid_utf8", "a lone surrogate escape"),
    )
