"""Syntax check with real parsers (DeepSeek-Coder §2.4: code with syntax errors is removed).

Python is checked with CPython's own compiler (``compile(text, path, "exec")``: the parser plus
the compiler's own checks, e.g. ``return`` outside a function; faster than ``ast.parse``, which
builds Python objects for every node): any ``SyntaxError`` (Python 2 code included) drops the
file. Nothing is executed. The other top languages of the
paper's Table 1 are parsed with tree-sitter grammars from PyPI (pinned in ``requirements.txt``):
Java, C, C++ (and CUDA), C#, JavaScript, TypeScript/TSX, PHP, Go, Rust, Ruby, shell. A
tree-sitter parse never fails outright; it marks what it could not parse with ``ERROR`` nodes
and inserts zero-width ``MISSING`` nodes. A file is dropped when

    (bytes under outermost ERROR nodes + 1 per MISSING node) > tolerance x its bytes

The tolerance is ``max_error_fraction`` (default 1 %), except for the C family (C, C++, CUDA),
where it is ``C_FAMILY_ERROR_FRACTION`` (15 %) at least: tree-sitter does not run the
preprocessor, and valid headers full of export macros (``class ARROW_EXPORT Buffer``) measure
up to 11 % of ERROR bytes on site-packages' real headers; so for those languages only gross
breakage (garbled text, another language, a binary blob) is caught. A file truncated mid-way
mostly yields MISSING nodes, one byte each, so truncation of a long file is caught by Python's
compiler but not by the tolerance. A language whose
grammar may not fit every file (``.h`` is C or C++; ``.js`` may be JSX/Flow) is tried with the
alternative grammars below, and the file is kept if any of them parses it.

Languages without a parser here are passed through and counted as ``unchecked``.
:func:`parse_result` returns the verdict and, for the modularity heuristic, the line count of
the longest function (see :mod:`.quality`).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from types import CodeType
from typing import Any

C_FAMILY_ERROR_FRACTION = 0.15
_C_FAMILY = frozenset({"c", "c++", "cuda"})

#: language -> grammars to try, each (module, attribute of its language function).
GRAMMARS: dict[str, tuple[tuple[str, str], ...]] = {
    "java": (("tree_sitter_java", "language"),),
    "c": (("tree_sitter_c", "language"), ("tree_sitter_cpp", "language")),
    "c++": (("tree_sitter_cpp", "language"), ("tree_sitter_c", "language")),
    "cuda": (("tree_sitter_cpp", "language"),),
    "c#": (("tree_sitter_c_sharp", "language"),),
    "javascript": (
        ("tree_sitter_javascript", "language"),
        ("tree_sitter_typescript", "language_tsx"),
    ),
    "typescript": (
        ("tree_sitter_typescript", "language_typescript"),
        ("tree_sitter_typescript", "language_tsx"),
    ),
    "php": (("tree_sitter_php", "language_php"),),
    "go": (("tree_sitter_go", "language"),),
    "rust": (("tree_sitter_rust", "language"),),
    "ruby": (("tree_sitter_ruby", "language"),),
    "shell": (("tree_sitter_bash", "language"),),
}

#: tree-sitter node types that are one function (their line span is the function's length).
FUNCTION_NODES = frozenset(
    {
        "function_definition",
        "function_declaration",
        "function_item",
        "method_declaration",
        "method_definition",
        "constructor_declaration",
        "function_expression",
        "arrow_function",
        "generator_function_declaration",
        "local_function_statement",
        "func_literal",
        "method",
        "singleton_method",
        "lambda_expression",
        "anonymous_function",
    }
)

_CO_OPTIMIZED = 0x1  # set on function code objects, not on module or class bodies
_LINE = itemgetter(2)  # the line of a ``co_lines()`` entry (None for lines without code)


@dataclass(frozen=True)
class ParseResult:
    """What parsing one file found."""

    checked: bool  # a parser exists for the language
    ok: bool  # it parses (within the tolerance); True when unchecked
    longest_function: int  # lines of its longest function (0 if none or unchecked)


def supported(lang: str) -> bool:
    """True when this module has a parser for ``lang`` and its grammar is installed."""
    return lang == "python" or bool(_parsers(lang))


@cache
def _parsers(lang: str) -> tuple[Any, ...]:
    """tree-sitter parsers for ``lang`` (one per grammar), built once per process."""
    try:
        import tree_sitter
    except ImportError:
        return ()
    parsers = []
    for module, attribute in GRAMMARS.get(lang, ()):
        try:
            language = tree_sitter.Language(getattr(importlib.import_module(module), attribute)())
        except (ImportError, AttributeError, ValueError):
            continue
        parsers.append(tree_sitter.Parser(language))
    return tuple(parsers)


def error_bytes(root: Any) -> int:
    """Bytes under outermost ERROR nodes plus one per MISSING node (only erroneous subtrees
    are visited, so a clean tree costs nothing)."""
    if not root.has_error:
        return 0
    total = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error:
            total += max(node.end_byte - node.start_byte, 1)
        elif node.is_missing:
            total += 1
        elif node.has_error:
            stack.extend(node.children)
    return total


def longest_tree_function(root: Any) -> int:
    """Lines of the longest function node (outermost functions only: nested ones are shorter)."""
    longest = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in FUNCTION_NODES:
            longest = max(longest, node.end_point[0] - node.start_point[0] + 1)
        elif node.end_point[0] - node.start_point[0] + 1 > longest:  # could hold a longer one
            stack.extend(node.named_children)
    return longest


def longest_python_function(code: CodeType) -> int:
    """Lines of the longest outermost function or method under a compiled module, from the
    first line to the last line with code."""
    longest = 0
    stack = [code]
    while stack:
        node = stack.pop()
        for const in node.co_consts:
            if not isinstance(const, CodeType):
                continue
            if const.co_flags & _CO_OPTIMIZED:
                last = max(filter(None, map(_LINE, const.co_lines())), default=0)
                longest = max(longest, last - const.co_firstlineno + 1)
            else:  # a class body: its methods are functions
                stack.append(const)
    return longest


def line_bound(text: str) -> int:
    """At least the number of lines of ``text`` for any parser (every CR and LF counted)."""
    return text.count("\n") + text.count("\r") + 1


def parse_result(
    text: str, lang: str, max_error_fraction: float, functions: bool = True
) -> ParseResult:
    """Parse ``text`` as ``lang``; see the module docstring for the verdict.

    ``functions=False`` skips measuring the longest function (``longest_function`` is 0), e.g.
    when :func:`line_bound` shows that no function of the file can be long enough to matter.
    """
    if lang == "python":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes etc.
                code = compile(text, "<file>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
            return ParseResult(True, False, 0)
        return ParseResult(True, True, longest_python_function(code) if functions else 0)
    parsers = _parsers(lang)
    if not parsers:
        return ParseResult(False, True, 0)
    data = text.encode("utf-8", "surrogatepass")
    if lang in _C_FAMILY:
        max_error_fraction = max(max_error_fraction, C_FAMILY_ERROR_FRACTION)
    limit = max_error_fraction * len(data)
    for parser in parsers:
        root = parser.parse(data).root_node
        if error_bytes(root) <= limit:
            return ParseResult(True, True, longest_tree_function(root) if functions else 0)
    return ParseResult(True, False, 0)
