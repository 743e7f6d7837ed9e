"""Generated record files with random corruption, through dscoder-preprocess-sft and
dscoder-preprocess in-process (hypothesis): never a traceback, every good record kept, every bad
one counted under its reason.

Each example writes one to three files: JSON Lines (LF or CRLF, blank lines) or, for the SFT
tool, JSON arrays (compact or pretty); optionally opened by a UTF-8 byte order mark and cut at
the end. Records are good (Alpaca, chat, or pretraining text; some with a duplicated key whose
last value is the good one, some long but within ``--max-record-mb``) or bad in a known way:
truncated JSON, a Latin-1 byte, a lone surrogate escape, nesting past 1024 levels, a record over
``--max-record-mb``, a value that is not an object, wrong field types, no response, NUL bytes,
empty text. The expected reason of each bad record is the contract of the tool's reader
(``megatron_dscoder.instruct.read``, ``megatron_dscoder.preprocess.inputs.readers``).

Examples per property come from ``DSCODER_FUZZ_PROFILE``: ``ci`` (default, a few seconds in
``make test``, derandomized) or ``fuzz`` (``make fuzz``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megatron_dscoder.data.indexed import read_documents

PROFILE = os.environ.get("DSCODER_FUZZ_PROFILE", "ci")
SETTINGS = settings(
    max_examples={"fuzz": 400}.get(PROFILE, 12),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=PROFILE != "fuzz",
)
MAX_RECORD_MB = 0.015  # 15,728 bytes: a good record of 7 long strings fits
LONG = 1000  # characters of a long string (a record holds 7 at most)
HUGE = 20000  # characters of a string over the limit
DEEP = 1100  # nesting levels, past orjson's 1024


@dataclass(frozen=True)
class Item:
    """One record as bytes (no newline), and the reason it is skipped (None: kept);
    ``lines_only``: cut short (an open string or bracket), which only a line ends."""

    data: bytes
    reason: str | None
    lines_only: bool = False


def _dump(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


TEXT = st.one_of(st.text(max_size=40), st.just("x" * LONG), st.just("é\n<|EOT|>\t\x00"))


def _corrupt(text_field: str, sft: bool) -> list:
    """Bad records any JSON reader must count: (strategy of Item) for each way."""
    deep = b"[" * DEEP + b"]" * DEEP
    field = text_field.encode()
    whole = b'{"%s": "abc", "output": "def"}' % field  # ASCII: a cut never splits a character
    return [
        st.integers(1, len(whole) - 1).map(lambda n: Item(whole[:n], "malformed_json", True)),
        st.sampled_from([b'{"%s": "a" "output": "b"}', b"{'%s': 1}", b'{"%s": tru}', b"{,}"]).map(
            lambda b: Item(b.replace(b"%s", field), "malformed_json")
        ),
        st.just(Item(b'{"%s": "caf\xe9", "output": "x"}' % field, "invalid_utf8")),
        st.just(Item(b'{"%s": "\\ud800", "output": "x"}' % field, "invalid_utf8")),
        st.just(
            Item(
                b'{"%s": %s, "output": "x"}' % (field, deep),
                "too_deep" if sft else "malformed_json",
            )
        ),
        st.just(Item(_dump({text_field: "y" * HUGE, "output": "x"}), "record_too_large")),
        st.sampled_from([b"5", b'"text"', b"null", b"true"]).map(
            lambda b: Item(b, "not_an_object")
        ),
    ]


def _alpaca() -> st.SearchStrategy[dict]:
    output = TEXT.filter(bool)
    extra = st.fixed_dictionaries({}, optional={"input": TEXT})
    return st.builds(lambda i, o, e: {"instruction": i, "output": o, **e}, TEXT, output, extra)


def _chat() -> st.SearchStrategy[dict]:
    turn = st.tuples(TEXT, TEXT.filter(bool))
    system = st.lists(TEXT, max_size=1)

    def build(sys_: list[str], turns: list[tuple[str, str]]) -> dict:
        messages = [{"role": "system", "content": s} for s in sys_]
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}]
            messages += [{"role": "assistant", "content": assistant}]
        return {"messages": messages}

    return st.builds(build, system, st.lists(turn, min_size=1, max_size=3))


def sft_items() -> st.SearchStrategy[Item]:
    good = st.one_of(_alpaca(), _chat())
    duplicated = _alpaca().map(  # the first "output" is overridden by the last
        lambda r: Item(b'{"output": 5, ' + _dump(r)[1:], None)
    )
    return st.one_of(
        good.map(lambda r: Item(_dump(r), None)),
        duplicated,
        *_corrupt("instruction", sft=True),
        st.just(Item(b'{"data": [{"instruction": "a", "output": "b"}]}', "unknown_format")),
        st.just(Item(b'{"instruction": 5, "output": "x"}', "bad_alpaca")),
        st.just(Item(b'{"messages": [{"role": "robot", "content": "x"}]}', "bad_messages")),
        st.just(Item(b'{"messages": "hello"}', "bad_messages")),
        st.just(Item(b'{"instruction": "x", "output": ""}', "no_response")),
    )


def _text_reason(text: str) -> str | None:
    text = text.removeprefix("\ufeff")
    return "binary" if "\x00" in text else "empty" if not text or text.isspace() else None


def pretraining_items() -> st.SearchStrategy[Item]:
    good = TEXT.map(lambda t: {"text": t, "path": "m.py"})
    return st.one_of(
        good.map(lambda r: Item(_dump(r), _text_reason(r["text"]))),
        good.map(lambda r: Item(b'{"text": 5, ' + _dump(r)[1:], _text_reason(r["text"]))),
        *_corrupt("text", sft=False),
        st.just(Item(b'{"path": "a.py"}', "missing_text")),
        st.just(Item(b'{"text": 5, "path": "a.py"}', "missing_text")),
        st.just(Item(b"[1, 2]", "not_an_object")),
    )


@dataclass(frozen=True)
class File:
    """A generated input file: its bytes and the skip reasons it should give."""

    data: bytes
    good: int
    reasons: Counter[str]


def _files(items: st.SearchStrategy[Item], sft: bool) -> st.SearchStrategy[File]:
    """Files of ``items``; JSON arrays too for the SFT tool. An empty file: for the SFT tool,
    nothing but a BOM and white space; for dscoder-preprocess, no byte at all."""

    @st.composite
    def build(draw: st.DrawFn) -> File:
        records = draw(st.lists(items, max_size=6))
        array = sft and draw(st.booleans())
        if array:  # an open string or bracket swallows what follows it in an array
            records = [r for r in records if not r.lines_only]
        else:  # a line of JSON Lines that is an array holds records: keep them out
            records = [r for r in records if not r.data.startswith(b"[")]
        bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
        cut = draw(st.booleans())
        reasons = Counter(r.reason for r in records if r.reason)
        good = sum(r.reason is None for r in records)
        datas = [r.data for r in records]
        if cut:  # a last record cut short: ASCII, so the cut is never inside a character
            last = _dump({"instruction": "cut here", "output": "x", "text": "cut"})
            datas.append(last[: draw(st.integers(0 if array else 1, len(last) - 1))])
            reasons["truncated_file" if array else "malformed_json"] += 1
        if array:
            sep = draw(st.sampled_from([b",", b",\n  "]))
            body = b"[" + sep.join(datas) + (b"" if cut else b"]")
        else:
            sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
            body = sep.join(datas) + (b"" if cut else sep)
        if not (body.strip() if sft else bom + body):
            reasons["empty_file"] += 1
        return File(bom + body, good, reasons)

    return build()


def _stderr_of(call) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = call()
    return code, err.getvalue()


def _one_error_line(err: str, start: str) -> None:
    """The error is one line (after the warnings that named each file's skips, if logging
    writes to this stream)."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith(start), err
    assert sum(line.startswith("error:") for line in lines) == 1, err


def _write(tmp: Path, files: list[File], counter: list[int]) -> tuple[Path, list[str]]:
    counter[0] += 1
    root = tmp / f"ex{counter[0]}"
    root.mkdir()
    paths = []
    for i, f in enumerate(files):
        (root / f"in{i}.json").write_bytes(f.data)
        paths.append(str(root / f"in{i}.json"))
    return root, paths


def test_sft_records(tiny_tokenizer_dir, tmp_path):
    from megatron_dscoder.instruct.cli import main

    counter = [0]

    @SETTINGS
    @given(st.lists(_files(sft_items(), sft=True), min_size=1, max_size=3))
    def run(files: list[File]) -> None:
        root, paths = _write(tmp_path, files, counter)
        argv = ["--input", *paths, "--tokenizer-model", str(tiny_tokenizer_dir)]
        argv += ["--output-prefix", str(root / "out" / "sft"), "--stats-json", str(root / "s")]
        code, err = _stderr_of(lambda: main([*argv, "--max-record-mb", str(MAX_RECORD_MB)]))
        good = sum(f.good for f in files)
        assert "Traceback" not in err and code == (0 if good else 1), err
        stats = json.loads((root / "s").read_text())
        assert stats["written"] == good
        assert stats["skipped_by_reason"] == dict(sum((f.reasons for f in files), Counter()))
        for path, f in zip(paths, files, strict=True):
            assert stats["skipped_by_file"].get(path, {}) == dict(f.reasons)
        if good:
            assert read_documents(str(root / "out" / "sft"))[1].size == good
        else:
            _one_error_line(err, "error: no ")

    run()


def test_pretraining_records(tiny_tokenizer_dir, tmp_path):
    from megatron_dscoder.preprocess.cli import main

    counter = [0]
    fast = ["--no-filters", "--no-quality", "--no-dedup", "--no-decontaminate"]
    fast += ["--no-repo-level", "--fim-rate", "0", "--workers", "1", "--no-progress"]

    @SETTINGS
    @given(st.lists(_files(pretraining_items(), sft=False), min_size=1, max_size=3))
    def run(files: list[File]) -> None:
        root, paths = _write(tmp_path, files, counter)
        argv = ["--input", *paths, "--tokenizer-model", str(tiny_tokenizer_dir), *fast]
        argv += ["--output-prefix", str(root / "out" / "code"), "--stats-json", str(root / "s")]
        code, err = _stderr_of(lambda: main([*argv, "--max-record-mb", str(MAX_RECORD_MB)]))
        good = sum(f.good for f in files)
        assert "Traceback" not in err and code == (0 if good else 1), err
        if not good:
            _one_error_line(err, "error: ")
            return
        stats = json.loads((root / "s").read_text())
        expected = sum((f.reasons for f in files), Counter())
        assert stats["documents_out"] == good
        assert stats["bad_input"] == dict(expected)
        assert read_documents(str(root / "out" / "code"))[1].size == good

    run()
