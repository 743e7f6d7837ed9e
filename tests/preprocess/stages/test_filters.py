"""The paper's file filters, one by one."""

from __future__ import annotations

from collections import Counter

import pytest

from megatron_dscoder.preprocess.records import Record
from megatron_dscoder.preprocess.stages.filters import alpha_count, drop_reason, filter_records

CODE = "def greet(name):\n    return 'hello ' + name\n" * 5


@pytest.mark.parametrize(
    ("text", "lang", "reason"),
    [
        (CODE, "python", None),
        (("x = '" + "a" * 150 + "'\n") * 3, "python", "avg_line_length"),
        ("a\n" * 600 + "b" * 1001 + "\n", "python", "max_line_length"),
        ("0123456789 = {};\n" * 10, "python", "alpha_fraction"),
        ('<?xml version="1.0"?>\n<root>some text inside here</root>\n', "xml", "xml_header"),
        (
            '<?xml version="1.0"?>\n<xsl:stylesheet>some text inside</xsl:stylesheet>\n',
            "xslt",
            None,
        ),
        (
            "<html><script>\n" + "var abc = 1;\n" * 50 + "</script><p>hi there</p></html>\n",
            "html",
            "html_visible_text",
        ),
        (
            "<html><body><p>\n" + "Readable words here.\n" * 10 + "</p></body></html>\n",
            "html",
            None,
        ),
        ('{"name": "x"}', "json", "json_yaml_size"),
        ("{\n" + '  "key": "value",\n' * 400 + "}\n", "json", "json_yaml_size"),
        ('{"name": "demo", "version": "1.0", "private": true}', "json", None),
        ("key: value\nother: thing\nmore: stuff\nlist: [alpha, beta]\n", "yaml", None),
    ],
)
def test_drop_reason(text: str, lang: str, reason: str | None) -> None:
    assert drop_reason(text, lang) == reason


def test_alpha_count_matches_isalpha_on_unicode() -> None:
    for text in ("abc123", "héllo wörld — 你好 123", "ΑΒΓ δ\n\tz", ""):
        assert alpha_count(text) == sum(c.isalpha() for c in text)


def test_filter_records_counts_per_filter() -> None:
    dropped: Counter[str] = Counter()
    records = [
        Record(CODE, lang="python"),
        Record("1234 5678\n", lang="python"),
        Record('{"abc": "de"}', lang="json"),
    ]
    kept = filter_records(records, dropped)
    assert kept == records[:1]
    assert dropped == Counter(alpha_fraction=1, json_yaml_size=1)
