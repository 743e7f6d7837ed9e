"""Every module, file and test the prose names exists.

Scanned: ``README.md``, ``docs/*.md`` and every docstring and comment of the package, the tools,
the benchmarks, the examples and the tests. Checked:

- ``:mod:`` references (``.name`` relative to the module's package, as Sphinx reads them, and
  ``~`` stripped) name a module of the package, and ``:class:``/``:func:``/``:data:``/
  ``:meth:``/``:attr:``/``:exc:`` references a name defined in one;
- dotted names of the package (``megatron_dscoder.data.indexed``) resolve to a module, or an
  attribute of one;
- file paths ``megatron_dscoder/…``, ``tests/…``, ``tools/…``, ``benchmarks/…``,
  ``examples/…`` and ``docs/…`` exist, and so do package paths written from inside the
  package (``preprocess/stages/fim.py``, ``training/loop.py``);
- relative links of the Markdown pages lead to files.

Placeholders (``NAME``, ``…``, ``*``) and machine-specific paths are not paths, and are skipped.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "megatron_dscoder"
ROOTS = ("megatron_dscoder", "tests", "tools", "benchmarks", "examples", "docs")
ROOMS = tuple(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())

MOD_REF = re.compile(r":mod:`~?([.\w]+)`")
NAME_REF = re.compile(r":(?:class|func|data|meth|attr|exc):`~?([.\w]+)`")
DOTTED = re.compile(r"(?<![\w./-])(megatron_dscoder(?:\.\w+)+)")
_TOP = "|".join(ROOTS)
_ROOM = "|".join(ROOMS)
PATH = re.compile(
    rf"(?<![\w./-])((?:{_TOP})/[\w./-]*\w\.(?:py|md|sh|json|sbatch)|(?:{_ROOM})/[\w./-]*\w\.py)"
    r"(?![\w/])"
)


def _prose_files() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for root in ("megatron_dscoder", "tools", "benchmarks", "examples", "tests"):
        files += sorted((REPO / root).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def _prose(path: Path) -> str:
    """A Markdown file whole; of a Python file its docstrings and comments only."""
    text = path.read_text("utf-8")
    if path.suffix != ".py":
        return text
    parts = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):  # docstrings, attribute docstrings included
                parts.append(node.value.value)
    return "\n".join(parts)


def _module_name(path: Path) -> str | None:
    if path.suffix != ".py" or PACKAGE not in path.parents:
        return None
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@functools.cache
def _names(path: Path) -> frozenset[str]:
    """Names a module defines or imports at top level, and the members of its classes."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def _resolves(dotted: str) -> bool:
    """A module of the package, or a name defined in one (read from its source, not imported:
    a class, function, constant, or a member of a class)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is not None:
            rest = parts[cut:]
            if path.name == "__init__.py" and rest and _module_file(".".join(parts[: cut + 1])):
                continue
            return all(name in _names(path) for name in rest)
    return False


def _relative(ref: str, module: str | None, is_package: bool) -> str | None:
    if not ref.startswith("."):
        return ref
    if module is None:
        return None
    base = module.split(".") if is_package else module.split(".")[:-1]
    dots = len(ref) - len(ref.lstrip("."))
    base = base[: len(base) - (dots - 1)]
    return ".".join([*base, ref.lstrip(".")])


def _candidates(ref: str, module: str, is_package: bool) -> list[str]:
    """Where a ``:class:``/``:func:`` reference may point, read as Sphinx does: relative to the
    module or its package, or absolute. A reference outside the package resolves by itself."""
    top = ref.split(".")[0]
    if not ref.startswith((".", "megatron_dscoder")) and importlib.util.find_spec(top) is not None:
        return ["megatron_dscoder"]  # the standard library or a dependency: not checked here
    if ref.startswith("."):
        return [name for name in (_relative(ref, module, is_package), module + ref) if name]
    package = ".".join(module.split(".")[:-1])
    return [ref, f"{module}.{ref}", f"{package}.{ref}"]


def _documented_new(text: str) -> set[str]:
    """Paths and module names a recipe's example creates (``# megatron_dscoder/X.py (new)``)."""
    paths = set(re.findall(r"# (megatron_dscoder/\S+\.py) \(new\)", text))
    return paths | {p[: -len(".py")].replace("/", ".") for p in paths}


def _broken(path: Path) -> list[str]:
    text = _prose(path)
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    new = _documented_new(text)
    found: list[str] = []
    for ref in MOD_REF.findall(text):
        name = _relative(ref, module, is_package)
        if name is not None and _candidates(name, name, False) == ["megatron_dscoder"]:
            continue  # the standard library or a dependency
        if name is not None and not _resolves(name):
            found.append(f":mod:`{ref}`")
    for ref in NAME_REF.findall(text) if module else ():
        if not any(_resolves(name) for name in _candidates(ref, module, is_package)):
            found.append(ref)
    for dotted in DOTTED.findall(text):
        if dotted not in new and not _resolves(dotted.rstrip(".")):
            found.append(dotted)
    for quoted in PATH.findall(text):
        candidates = [REPO / quoted, PACKAGE / quoted]
        if "*" in quoted or "NAME" in quoted or quoted in new:
            continue
        if not any(c.exists() for c in candidates):
            found.append(quoted)
    if path.suffix == ".md":  # relative links of a page
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in link and not (path.parent / link).exists():
                found.append(link)
    return sorted(set(found))


@pytest.mark.parametrize("path", _prose_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_quoted_module_and_path_exists(path: Path) -> None:
    assert _broken(path) == []
