"""Invocation relationships between files of one repository, found with regular expressions.

DeepSeek-Coder extracts dependencies with regexes (``import`` in Python and Java, ``#include``
in C/C++, ``using`` in C#) and keeps only those that point to files of the same repository
(§2.2). :func:`extract` finds the references in one file; :class:`RepoIndex` resolves them to
other files of the repository:

- Python: ``import a.b``, ``from a.b import c`` (``a/b/c.py`` if ``c`` is a module, else
  ``a/b.py`` or ``a/b/__init__.py``), and relative ``from ..x import y``. Module names are
  matched against every path suffix, since the source root of a repository is unknown.
- Java: ``import a.b.C;`` -> ``a/b/C.java``; ``import a.b.*;`` -> the files of ``a/b/``;
  ``import static a.b.C.m;`` -> ``a/b/C.java``.
- C and C++: ``#include "x/y.h"`` and ``<x/y.h>``, first relative to the including file, then
  by path suffix (system headers simply resolve to nothing).
- C#: ``using A.B;`` -> files declaring ``namespace A.B`` (and ``A/B.cs`` if it exists).

When several files match, the one closest in the directory tree wins, then the smallest path;
a wildcard or namespace import links to at most :data:`MAX_TARGETS` files.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

MAX_TARGETS = 64

_PY_NAME = r"[\w.]+(?:[ \t]+as[ \t]+\w+)?"  # `a.b` or `a.b as c`
_PY_IMPORT = re.compile(rf"^[ \t]*import[ \t]+({_PY_NAME}(?:[ \t]*,[ \t]*{_PY_NAME})*)", re.M)
_PY_FROM = re.compile(
    r"^[ \t]*from[ \t]+(\.*)((?:\w[\w.]*)?)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.M
)
_JAVA_IMPORT = re.compile(r"^[ \t]*import[ \t]+(?:static[ \t]+)?([\w.]+?)(\.\*)?[ \t]*;", re.M)
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"\n]+)[>\"]", re.M)
_CS_USING = re.compile(
    r"^[ \t]*(?:global[ \t]+)?using[ \t]+(?:static[ \t]+)?(?:\w+[ \t]*=[ \t]*)?([\w.]+)[ \t]*;",
    re.M,
)
_CS_NAMESPACE = re.compile(r"^[ \t]*namespace[ \t]+([\w.]+)", re.M)


@dataclass(frozen=True, slots=True)
class Ref:
    """One import-like reference: ``kind`` is py, java, include or using."""

    kind: str
    target: str
    level: int = 0  # python: leading dots of a relative import
    names: tuple[str, ...] = ()  # python: imported names (may be submodules); java: ("*",)


def _names(clause: str) -> tuple[str, ...]:
    clause = clause.strip().strip("()").replace("\\", " ")
    return tuple(part.split()[0] for part in clause.split(",") if part.split())


def extract(lang: str, text: str) -> tuple[list[Ref], list[str]]:
    """(references, declared C# namespaces) of one file."""
    refs: list[Ref] = []
    if lang == "python":
        starts = _import_lines(text)
        for match in _matches(_PY_IMPORT, text, starts):
            refs += [Ref("py", name) for name in _names(match.group(1))]
        for match in _matches(_PY_FROM, text, starts):
            dots, module, clause = match.groups()
            refs.append(Ref("py", module, len(dots), _names(clause)))
    elif lang == "java":
        for match in _JAVA_IMPORT.finditer(text):
            refs.append(Ref("java", match.group(1), names=("*",) if match.group(2) else ()))
    elif lang in ("c", "c++", "cuda", "objective-c", "objective-c++"):
        if "include" in text:
            refs = [Ref("include", m.group(1).strip()) for m in _INCLUDE.finditer(text)]
    elif lang == "c#":
        refs = [Ref("using", m.group(1)) for m in _CS_USING.finditer(text)]
        return refs, _CS_NAMESPACE.findall(text)
    return refs, []


def _import_lines(text: str) -> list[int]:
    """Start offsets of the lines that contain ``import``, in order: a Python import statement
    starts on such a line (its keywords and module name are on its first line)."""
    starts = []
    at = text.find("import")
    while at >= 0:
        starts.append(text.rfind("\n", 0, at) + 1)
        end = text.find("\n", at)
        if end < 0:
            break
        at = text.find("import", end)
    return starts


def _matches(pattern: re.Pattern[str], text: str, starts: list[int]) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` for a pattern that can only match from one of ``starts``
    (a line start, ``^`` under ``re.M``), trying those alone."""
    end = 0
    for start in starts:
        if start >= end and (match := pattern.match(text, start)):
            end = match.end()
            yield match


def _py_modules(path: str) -> list[str]:
    """Dotted names a Python file may be imported as (every suffix of its module path)."""
    stem, ext = posixpath.splitext(path)
    if ext not in (".py", ".pyi", ".pyx", ".pxd", ".pyw"):
        return []
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join(parts[i:]) for i in range(len(parts)) if all(parts[i:])]


class RepoIndex:
    """Lookup tables over the files of one repository."""

    def __init__(self, paths: list[str], namespaces: list[list[str]], repo: str = "") -> None:
        self.paths = paths
        # a checkout is often the package itself: `import json.scanner` inside repo "json"
        self.repo_package = re.sub(r"\W", "_", repo.rstrip("/").rsplit("/", 1)[-1])
        self.by_path = {path: i for i, path in enumerate(paths)}
        self.py: dict[str, list[int]] = defaultdict(list)
        self.by_name: dict[str, list[int]] = defaultdict(list)
        self.by_dir: dict[str, list[int]] = defaultdict(list)
        self.namespace: dict[str, list[int]] = defaultdict(list)
        for i, path in enumerate(paths):
            for module in _py_modules(path):
                self.py[module].append(i)
            self.by_name[posixpath.basename(path)].append(i)
            directory = posixpath.dirname(path)
            self.by_dir[directory].append(i)
            for ns in namespaces[i]:
                self.namespace[ns].append(i)

    def _closest(self, importer: int, candidates: list[int], limit: int = 1) -> list[int]:
        others = [c for c in candidates if c != importer]
        if len(others) < 2:  # nothing to rank (most references: a module or none)
            return others[:limit]
        here = self.paths[importer].split("/")

        def distance(i: int) -> tuple[int, str]:
            there = self.paths[i].split("/")
            common = 0
            for a, b in zip(here, there, strict=False):
                if a != b:
                    break
                common += 1
            return (len(here) + len(there) - 2 * common, self.paths[i])

        return sorted(others, key=distance)[:limit]

    def _by_suffix(self, importer: int, suffix: str, limit: int = 1) -> list[int]:
        name = posixpath.basename(suffix)
        hits = [
            i for i in self.by_name.get(name, ()) if ("/" + self.paths[i]).endswith("/" + suffix)
        ]
        return self._closest(importer, hits, limit)

    def resolve(self, importer: int, ref: Ref) -> list[int]:
        """Files of the repository that ``ref`` (made in file ``importer``) points to."""
        if ref.kind == "py":
            return self._resolve_python(importer, ref)
        if ref.kind == "include":
            here = posixpath.dirname(self.paths[importer])
            local = posixpath.normpath(posixpath.join(here, ref.target))
            if local in self.by_path:
                return [self.by_path[local]]
            return self._by_suffix(importer, posixpath.normpath(ref.target).lstrip("./"))
        if ref.kind == "java":
            parts = ref.target.split(".")
            if ref.names:  # wildcard: every file of the package directory
                directory = "/".join(parts)
                hits = [
                    i
                    for d, files in self.by_dir.items()
                    if ("/" + d).endswith("/" + directory)
                    for i in files
                ]
                return self._closest(importer, hits, MAX_TARGETS)
            for n in range(len(parts), 0, -1):  # static imports name a member of a class
                found = self._by_suffix(importer, "/".join(parts[:n]) + ".java")
                if found:
                    return found
            return []
        if ref.kind == "using":
            hits = list(self.namespace.get(ref.target, ()))
            hits += self._by_suffix(importer, ref.target.replace(".", "/") + ".cs")
            return self._closest(importer, sorted(set(hits)), MAX_TARGETS)
        return []

    def _resolve_python(self, importer: int, ref: Ref) -> list[int]:
        if ref.level:
            base = self.paths[importer].split("/")[:-1]
            if ref.level > 1:
                base = base[: len(base) - (ref.level - 1)]
            stem = "/".join([*base, *ref.target.split(".")]) if ref.target else "/".join(base)
            out = []
            for name in ref.names or ("",):
                for candidate in (f"{stem}/{name}", stem):
                    candidate = candidate.strip("/")
                    hit = self._py_file(candidate)
                    if hit is not None:
                        out.append(hit)
                        break
            return sorted(set(out) - {importer})
        modules = [f"{ref.target}.{name}" for name in ref.names if name != "*"]
        out = []
        for module in modules or [ref.target]:
            parts = module.split(".")
            if len(parts) > 1 and parts[0] == self.repo_package and parts[0] not in self.py:
                parts = parts[1:]
            for n in range(len(parts), 0, -1):
                hits = self._closest(importer, self.py.get(".".join(parts[:n]), []))
                if hits:
                    out += hits
                    break
        return sorted(set(out))

    def _py_file(self, stem: str) -> int | None:
        for candidate in (f"{stem}.py", f"{stem}/__init__.py", f"{stem}.pyi"):
            if candidate in self.by_path:
                return self.by_path[candidate]
        return None
