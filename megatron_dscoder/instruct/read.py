"""Instruction records from JSON Lines or JSON array files, streamed with bounded memory.

A file whose first character (after a UTF-8 byte order mark and white space) is ``[`` is a JSON
array (or several, one after another), unless that array ends on its line and more lines follow:
then it is JSON Lines, where a line that is an array holds records. A file that is one JSON
object is one record (a pretty-printed record, or records wrapped in an object, which the
template names); anything else is JSON Lines.

No file is loaded whole (one object file is, up to ``max_record_bytes``): lines are read with
a size cap, and an array is cut into its top-level elements by a scanner that tracks only
nesting depth and string state (:class:`ArrayCutter`), so memory stays below one chunk plus
``max_record_bytes`` whatever the file's size, and one malformed element costs that element
only. Each record is parsed on its own with orjson, which also refuses lone surrogates (they
cannot be tokenized) and nesting over 1024 levels (no recursion limit to hit).

A record that cannot be used is skipped and counted in :class:`SFTStats` by reason, per file,
with the first example's position kept for the warning logged when the file is done:

``malformed_json``    not JSON (also: an empty array element, data after the array's end)
``invalid_utf8``      bytes that are not UTF-8, or a lone surrogate escape (``"\\ud800"``)
``too_deep``          nesting past orjson's limit of 1024 levels
``record_too_large``  a line or element over ``--max-record-mb`` (skipped while streaming)
``truncated_file``    an array file that ends inside the array (its complete records are kept)
``empty_file``        a file with no record at all

(:mod:`.template` adds the reasons of records that parse but are not instructions.)
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

logger = logging.getLogger(__name__)

UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20
#: Outside a string: the bytes that change depth, open a string or separate elements.
_STRUCTURE = re.compile(rb'["\[\]{},]')
#: Inside a string: everything up to its closing quote (escapes skipped), C-speed.
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True)
class Sourced:
    """A parsed JSON value and where it came from (``source``: the file; ``where``: the line
    or array element), so a skip can name both."""

    source: str
    where: str
    value: object


@dataclass
class SFTStats:
    """Counts for the stats JSON: ``records`` is ``written`` plus ``skipped``; skips by reason,
    overall and per input file."""

    records: int = 0
    written: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_by_file: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)

    def skip(self, source: str, reason: str, detail: str) -> None:
        """Count one skipped record (or file) of ``source``; ``detail`` of the first is kept."""
        self.records += 1
        self.skipped[reason] += 1
        self.skipped_by_file.setdefault(source, Counter())[reason] += 1
        self.examples.setdefault((source, reason), detail)

    def file_summary(self, source: str) -> str:
        """``reason N (first: detail), ...`` of the skips in ``source``, most frequent first."""
        counts = self.skipped_by_file.get(source, Counter())
        return ", ".join(
            f"{reason} {n} (first: {self.examples[(source, reason)]})"
            for reason, n in counts.most_common()
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "records": self.records,
            "written": self.written,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "skipped_by_file": {
                path: dict(sorted(c.items())) for path, c in self.skipped_by_file.items()
            },
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
        }


def parse_record(data: bytes) -> tuple[object, None] | tuple[None, tuple[str, str]]:
    """``(value, None)``, or ``(None, (reason, message))`` for bytes that are not usable JSON.

    orjson first; what it refuses only for being outside strict JSON (``NaN``, ``Infinity``,
    a number past a double, as Python's ``json.dumps`` writes them in metadata fields) is read
    by the standard library, and kept if its strings are all encodable."""
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as err:
        message = str(err)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, ("invalid_utf8", f"byte 0x{data[err.start]:02x} is not UTF-8")
    if "surrogate" in message:
        return None, ("invalid_utf8", "a lone surrogate escape")
    if "depth" in message or "recursion" in message:
        return None, ("too_deep", "nested deeper than 1024 levels")
    try:
        value = json.loads(data)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None, ("invalid_utf8", "a lone surrogate escape")
    except (ValueError, RecursionError):
        return None, ("malformed_json", message.split(":")[0])
    return value, None


def iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line)`` of a binary stream, ``None`` for a line over ``max_bytes``
    (read past in 1 MiB pieces, never held)."""
    number = 0
    while line := stream.readline(max_bytes + 1):
        number += 1
        content = len(line) - line.endswith(b"\n")
        if content <= max_bytes:
            yield number, line
            continue
        while line and not line.endswith(b"\n"):
            line = stream.readline(CHUNK_BYTES)
        yield number, None


class ArrayCutter:
    """Cuts a JSON array's bytes, fed chunk by chunk after its opening ``[``, into the bytes of
    its top-level elements, without parsing them.

    Only nesting depth and string state are tracked, so a malformed element is cut out whole
    and parsed (and refused) on its own. An element that grows past ``max_bytes`` is dropped
    as it streams past. :meth:`feed` returns ``bytes`` per element, or the reason
    (``record_too_large``, ``malformed_json``) of an unusable one; once the array is closed
    (``done``), ``leftover`` holds the rest of the chunk."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.depth = 0  # nesting inside the top array: 0 between its elements
        self.in_string = False
        self.escape = False  # the previous chunk ended on a backslash inside a string
        self.pieces: list[bytes] = []
        self.size = 0
        self.oversize = False
        self.elements = 0
        self.done = False
        self.leftover = b""

    def _keep(self, data: bytes) -> None:
        if self.oversize:
            return
        self.size += len(data)
        if self.size > self.max_bytes:
            self.pieces, self.oversize = [], True
        else:
            self.pieces.append(data)

    def _cut(self, out: list[bytes | str], closing: bool) -> None:
        data = b"".join(self.pieces).strip(_WHITESPACE)
        if self.oversize:
            out.append("record_too_large")
        elif data:
            out.append(data)
        elif not closing or self.elements:
            out.append("malformed_json")  # [a,,b], [,a] or [a,]; only [] is empty
        self.pieces, self.size, self.oversize = [], 0, False
        self.elements += 1

    def feed(self, chunk: bytes) -> list[bytes | str]:
        out: list[bytes | str] = []
        pos, end = 0, len(chunk)
        while pos < end:
            if self.in_string:
                if self.escape:
                    self._keep(chunk[pos : pos + 1])
                    pos, self.escape = pos + 1, False
                    continue
                stop = _STRING_BODY.match(chunk, pos).end()
                if stop < end and chunk[stop] == 0x22:  # the closing quote
                    self._keep(chunk[pos : stop + 1])
                    self.in_string, pos = False, stop + 1
                    continue
                self._keep(chunk[pos:end])  # the string goes on in the next chunk
                self.escape = stop < end  # it stopped at a backslash ending the chunk
                break
            match = _STRUCTURE.search(chunk, pos)
            if match is None:
                self._keep(chunk[pos:end])
                break
            at, byte = match.start(), chunk[match.start()]
            if self.depth == 0 and byte in b",]}":
                self._keep(chunk[pos:at])
                self._cut(out, closing=byte != 0x2C)
                if byte != 0x2C:  # the top array is closed (a stray } closes it too)
                    self.done, self.leftover = True, chunk[at + 1 :]
                    break
                pos = at + 1
                continue
            self._keep(chunk[pos : at + 1])
            if byte == 0x22:
                self.in_string = True
            elif byte in b"[{":
                self.depth += 1
            elif byte in b"]}":
                self.depth -= 1
            pos = at + 1
        return out


def _array_records(
    stream: BinaryIO, source: str, max_bytes: int, stats: SFTStats
) -> Iterator[Sourced]:
    """The elements of the file's JSON array (or of several arrays, one after another)."""
    cutter: ArrayCutter | None = None
    index = 0
    chunk = stream.read(CHUNK_BYTES).removeprefix(UTF8_BOM)
    while True:
        if cutter is None:  # before an array: white space, then [
            chunk = chunk.lstrip(_WHITESPACE)
            if not chunk:
                chunk = stream.read(CHUNK_BYTES)
                if not chunk:
                    return
                continue
            if chunk[:1] != b"[":
                where = f"after element {index}"
                stats.skip(source, "malformed_json", f"{where}: data after the array's end")
                return
            cutter, chunk = ArrayCutter(max_bytes), chunk[1:]
        if not chunk:
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                stats.skip(
                    source,
                    "truncated_file",
                    f"the file ends inside the array, after {index} elements (truncated?)",
                )
                return
        for item in cutter.feed(chunk):
            index += 1
            where = f"element {index}"
            if isinstance(item, bytes):
                value, problem = parse_record(item)
                if problem is None:
                    yield Sourced(source, where, value)
                    continue
                reason, detail = problem
            elif item == "record_too_large":
                reason, detail = item, f"over {max_bytes} bytes"
            else:
                reason, detail = item, "an empty element"
            stats.skip(source, reason, f"{where}: {detail}")
        chunk = b""
        if cutter.done:
            cutter, chunk = None, cutter.leftover


def _jsonl_records(
    stream: BinaryIO, source: str, max_bytes: int, stats: SFTStats
) -> Iterator[Sourced]:
    for number, line in iter_lines(stream, max_bytes):
        where = f"line {number}"
        if line is None:
            stats.skip(source, "record_too_large", f"{where} is over {max_bytes} bytes")
            continue
        line = line.removeprefix(UTF8_BOM)  # a BOM opens the file (or a concatenated one)
        if not line.strip():
            continue
        value, problem = parse_record(line)
        if problem:
            stats.skip(source, problem[0], f"{where}: {problem[1]}")
        elif isinstance(value, list):  # a line of records (or of nonsense, counted later)
            for index, element in enumerate(value, 1):
                yield Sourced(source, f"{where}, element {index}", element)
        else:
            yield Sourced(source, where, value)


def _first_byte(stream: BinaryIO) -> bytes:
    """The first byte after a byte order mark and white space (``b""`` for an empty file)."""
    head = stream.read(CHUNK_BYTES).removeprefix(UTF8_BOM)
    while head:
        stripped = head.lstrip(_WHITESPACE)
        if stripped:
            return stripped[:1]
        head = stream.read(CHUNK_BYTES)
    return b""


def _array_on_first_line(stream: BinaryIO, max_bytes: int) -> bool:
    """Whether the first non-blank line is a whole array with more lines after it: JSON Lines
    whose first record is an array, not an array file."""
    stream.seek(0)
    for _, line in iter_lines(stream, max_bytes):
        if line is None:
            return False
        line = line.removeprefix(UTF8_BOM).strip(_WHITESPACE)
        if line:
            break
    cutter = ArrayCutter(max_bytes)
    cutter.feed(line[1:])
    if not cutter.done or cutter.leftover.strip(_WHITESPACE):
        return False
    return _first_byte(stream) != b""


def file_kind(stream: BinaryIO, max_bytes: int) -> str:
    """``empty``, ``array`` (a JSON array file), ``object`` (one JSON object, possibly over
    several lines) or ``jsonl``."""
    first = _first_byte(stream)
    if not first:
        return "empty"
    if first == b"[":
        return "jsonl" if _array_on_first_line(stream, max_bytes) else "array"
    return "object" if first == b"{" else "jsonl"


def _one_object(stream: BinaryIO, max_bytes: int) -> object | None:
    """The file as one JSON object (a pretty-printed record, or records wrapped in an object,
    which the template then names), if it is one and within ``max_bytes``; else None."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        return None
    value, _ = parse_record(data.removeprefix(UTF8_BOM))
    return value if isinstance(value, dict) else None


def read_records(
    paths: Iterable[str | Path], stats: SFTStats, max_record_bytes: int = 16 << 20
) -> Iterator[Sourced]:
    """The JSON values of each file in order (a JSON array file, or JSON Lines); what cannot
    be used is counted in ``stats``, and a warning names each file that had skips."""
    for path in paths:
        source = str(path)
        with open(source, "rb") as stream:
            kind = file_kind(stream, max_record_bytes)
            stream.seek(0)  # inputs are regular files (the CLI refuses FIFOs)
            if kind == "empty":
                stats.skip(source, "empty_file", "no record in the file")
            elif kind == "array":
                yield from _array_records(stream, source, max_record_bytes, stats)
            elif kind == "object" and (whole := _one_object(stream, max_record_bytes)) is not None:
                yield Sourced(source, "the whole file", whole)
            else:
                stream.seek(0)
                yield from _jsonl_records(stream, source, max_record_bytes, stats)
        if source in stats.skipped_by_file:
            skipped = sum(stats.skipped_by_file[source].values())
            logger.warning("%s: %d skipped: %s", source, skipped, stats.file_summary(source))
