"""Worker-side readers: turn one task of :mod:`.sources` into :class:`Record` objects.

Every way a record can be bad is counted by reason instead of raised, so a run never stops
on bad input:

``malformed_json``   a JSONL line that is not JSON
``invalid_utf8``     bytes that are not UTF-8 (or a JSON string with a lone surrogate)
``not_an_object``    a JSON value that is not an object (a list, a string, ...)
``missing_text``     no text field, or a text field that is not a string
``binary``           text containing NUL bytes (a binary file)
``empty``            empty or whitespace-only text
``record_too_large`` a record over ``max_record_bytes`` (also counted while streaming)
``unreadable_file``  a file that cannot be opened or read

A UTF-8 byte order mark is stripped where it opens a JSONL line or a text (a file saved with
one), so it neither makes the first record malformed nor stays in the sample.

Field names default to ``text``/``repo``/``path``/``lang`` and fall back to The Stack's
``content``/``max_stars_repo_name``/``max_stars_repo_path``/``lang``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter

import orjson

from megatron_dscoder.preprocess.config import FieldNames
from megatron_dscoder.preprocess.inputs.sources import (
    InputChunk,
    JsonlBlob,
    ParquetRowGroup,
    RepoFiles,
)
from megatron_dscoder.preprocess.records import Record, language_of

logger = logging.getLogger(__name__)
BOM = "\ufeff"
UTF8_BOM = BOM.encode("utf-8")


def _first(obj: dict, names: tuple[str, ...]) -> object:
    for name in names:
        value = obj.get(name)
        if value is not None:
            return value
    return None


def _as_str(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def make_record(text: str, repo: str, path: str, lang: str, bad: Counter[str]) -> Record | None:
    """A validated record, or None (counted in ``bad``) for binary or empty text.

    A leading byte order mark (a file saved as "UTF-8 with BOM") is not part of the code.
    """
    text = text.removeprefix(BOM)
    if "\x00" in text:
        bad["binary"] += 1
        return None
    if not text or text.isspace():
        bad["empty"] += 1
        return None
    return Record(text=text, repo=repo, path=path, lang=language_of(lang, path))


def read_jsonl_blob(
    task: JsonlBlob, fields: FieldNames, max_record_bytes: int, bad: Counter[str]
) -> list[Record]:
    """Parse the complete lines of one blob."""
    records = []
    for line in task.blob.split(b"\n"):
        line = line.removeprefix(UTF8_BOM)  # a BOM opens the file (or a concatenated one)
        if not line.strip():
            continue
        if len(line) > max_record_bytes:
            bad["record_too_large"] += 1
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            bad[_json_error_reason(line, err)] += 1
            continue
        if not isinstance(obj, dict):
            bad["not_an_object"] += 1
            continue
        text = _first(obj, fields.text)
        if not isinstance(text, str):
            bad["missing_text"] += 1
            continue
        repo, path, lang = (
            _as_str(_first(obj, f)) for f in (fields.repo, fields.path, fields.lang)
        )
        record = make_record(text, repo, path, lang, bad)
        if record is not None:
            records.append(record)
    return records


def _json_error_reason(line: bytes, err: Exception) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    return "invalid_utf8" if "surrogate" in str(err) else "malformed_json"


def read_parquet_row_group(
    task: ParquetRowGroup, fields: FieldNames, max_record_bytes: int, bad: Counter[str]
) -> list[Record]:
    """Read one row group; string or binary text columns are accepted."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(task.source)
        wanted = set(fields.all_names())
        columns = [name for name in pf.schema_arrow.names if name in wanted]
        table = pf.read_row_group(task.row_group, columns=columns)
    except Exception as err:  # pyarrow raises several types for corrupt files
        logger.warning(
            "skipping unreadable row group %d of %s: %s", task.row_group, task.source, err
        )
        bad["unreadable_file"] += 1
        return []

    def column(names: tuple[str, ...]) -> list[object]:
        name = next((n for n in names if n in table.column_names), None)
        return table.column(name).to_pylist() if name else [None] * table.num_rows

    records = []
    texts = column(fields.text)
    metadata = zip(*(column(f) for f in (fields.repo, fields.path, fields.lang)), strict=True)
    for text, (repo, path, lang) in zip(texts, metadata, strict=True):
        if isinstance(text, bytes):
            if len(text) > max_record_bytes:
                bad["record_too_large"] += 1
                continue
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                bad["invalid_utf8"] += 1
                continue
        if not isinstance(text, str):
            bad["missing_text"] += 1
            continue
        if len(text) > max_record_bytes:
            bad["record_too_large"] += 1
            continue
        record = make_record(text, _as_str(repo), _as_str(path), _as_str(lang), bad)
        if record is not None:
            records.append(record)
    return records


def read_repo_files(task: RepoFiles, max_record_bytes: int, bad: Counter[str]) -> list[Record]:
    """Read a batch of files of one checkout; the language comes from the extension."""
    records = []
    for rel in task.paths:
        data = _read_regular(os.path.join(task.root, rel), max_record_bytes + 1)
        if data is None:
            bad["unreadable_file"] += 1
            continue
        if len(data) > max_record_bytes:
            bad["record_too_large"] += 1
            continue
        if b"\x00" in data[:8192]:
            bad["binary"] += 1
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            bad["invalid_utf8"] += 1
            continue
        record = make_record(text, task.repo, rel, "", bad)
        if record is not None:
            records.append(record)
    return records


def _read_regular(path: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of ``path`` if it is still a regular file (None otherwise). The
    walk kept regular files only; opened without blocking and without following a link, a file
    swapped for a FIFO or a link since then is refused instead of blocking the worker."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as f:
        try:
            return f.read(limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            return None


def read_chunk(
    task: InputChunk, fields: FieldNames, max_record_bytes: int, bad: Counter[str]
) -> list[Record]:
    """Records of any task."""
    if isinstance(task, JsonlBlob):
        return read_jsonl_blob(task, fields, max_record_bytes, bad)
    if isinstance(task, ParquetRowGroup):
        return read_parquet_row_group(task, fields, max_record_bytes, bad)
    return read_repo_files(task, max_record_bytes, bad)
