"""DeepSeek-Coder's rule-based file filters (the StarCoder rules restated in the paper, §2.1).

A file is dropped when:

- ``avg_line_length``: its average line length exceeds 100 characters, or
  ``max_line_length``: its longest line exceeds 1000 characters;
- ``alpha_fraction``: fewer than 25 % of its characters are alphabetic (``str.isalpha``, the
  paper's wording; BigCode's basic filter used alphanumeric);
- ``xml_header``: ``<?xml version=`` appears in its first 100 characters, unless it is XSLT;
- ``html_visible_text``: it is HTML and its visible text (outside tags, scripts and styles) is
  under 20 % of the file or under 100 characters;
- ``json_yaml_size``: it is JSON or YAML and has fewer than 50 or more than 5000 characters.

:func:`drop_reason` returns the first rule a text breaks (or None); :func:`filter_records` drops
and counts per rule, and :func:`filter_stage` is the record stage that runs it. The checks avoid
per-character Python loops on the
common ASCII path (``bytes.translate`` counts letters), so filtering costs little next to
tokenisation.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from html.parser import HTMLParser

from megatron_dscoder.preprocess.records import Record
from megatron_dscoder.preprocess.stages.base import WorkerContext
from megatron_dscoder.preprocess.stats import PartitionStats

MAX_AVG_LINE_LENGTH = 100
MAX_LINE_LENGTH = 1000
MIN_ALPHA_FRACTION = 0.25
XML_HEADER = "<?xml version="
MIN_HTML_VISIBLE_FRACTION = 0.2
MIN_HTML_VISIBLE_CHARS = 100
JSON_YAML_CHARS = (50, 5000)

FILTER_NAMES: tuple[str, ...] = (
    "avg_line_length",
    "max_line_length",
    "alpha_fraction",
    "xml_header",
    "html_visible_text",
    "json_yaml_size",
)

_ASCII_LETTERS = string.ascii_letters.encode()
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def alpha_count(text: str) -> int:
    """Number of characters of ``text`` for which ``str.isalpha`` is true."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_LETTERS))
    ascii_part = text.encode("ascii", "ignore")
    count = len(ascii_part) - len(ascii_part.translate(None, _ASCII_LETTERS))
    return count + sum(map(str.isalpha, _ASCII_RUN.sub("", text)))


def line_length_rule(text: str) -> str | None:
    """'avg_line_length' / 'max_line_length' when a line rule is broken, else None."""
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if (len(text) - text.count("\n")) / max(n_lines, 1) > MAX_AVG_LINE_LENGTH:
        return "avg_line_length"
    if len(text) > MAX_LINE_LENGTH and max(map(len, text.split("\n"))) > MAX_LINE_LENGTH:
        return "max_line_length"
    return None


class _VisibleText(HTMLParser):
    """Collects the length of text outside tags, ``<script>`` and ``<style>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.visible = 0
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._hidden_depth:
            self._hidden_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.visible += len(data)


def html_visible_chars(html: str) -> int:
    """Characters of visible text in an HTML document."""
    parser = _VisibleText()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # malformed markup: count what was parsed
        pass
    return parser.visible


def drop_reason(text: str, lang: str) -> str | None:
    """The name of the first filter that drops this file, or None to keep it."""
    reason = line_length_rule(text)
    if reason:
        return reason
    if alpha_count(text) < MIN_ALPHA_FRACTION * len(text):
        return "alpha_fraction"
    if lang != "xslt" and XML_HEADER in text[:100]:
        return "xml_header"
    if lang == "html":
        visible = html_visible_chars(text)
        if visible < MIN_HTML_VISIBLE_FRACTION * len(text) or visible < MIN_HTML_VISIBLE_CHARS:
            return "html_visible_text"
    if lang in ("json", "yaml") and not JSON_YAML_CHARS[0] <= len(text) <= JSON_YAML_CHARS[1]:
        return "json_yaml_size"
    return None


def filter_records(records: Iterable[Record], dropped: Counter[str]) -> list[Record]:
    """Partition stage: keep the records no filter drops; count drops per filter in ``dropped``."""
    kept = []
    for record in records:
        reason = drop_reason(record.text, record.lang)
        if reason is None:
            kept.append(record)
        else:
            dropped[reason] += 1
    return kept


def filter_stage(records: list[Record], ctx: WorkerContext, stats: PartitionStats) -> list[Record]:
    """The record stage: drops counted per rule in ``filtered``."""
    return filter_records(records, stats.filtered)
