r"""Extract torchrun's option table from a torch wheel, without installing or importing torch.

    python tests/launchers/extract_torchrun_options.py torch-2.10.0-...whl \
        > tests/launchers/torchrun_2.10.json

(the wheel from ``pip download torch==2.10.0 --no-deps``; any platform's wheel has the same
run.py). Reads ``torch/distributed/run.py`` out of the wheel (a zip) and walks the ``add_argument``
calls of ``get_args_parser`` with :mod:`ast`: option strings, whether the option takes a value
(``nargs``), its ``choices`` and its value type. Choices written as ``[m.value for m in Enum]``
are resolved from the enum's class body in the same wheel. The JSON keeps the wheel's file name
and sha256, so the table can be re-made and compared; torch's source itself is not stored.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import zipfile
from pathlib import Path

RUN_PY = "torch/distributed/run.py"
FLAG_ACTIONS = {"store_true", "store_false", "check_env", "count"}


class _Tree:
    """Files of a wheel (a zip) or of an installed package's parent directory, by path."""

    def __init__(self, path: Path) -> None:
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        self._root = path

    def read(self, name: str) -> bytes:
        return self._zip.read(name) if self._zip else (self._root / name).read_bytes()


def _enum_values(wheel: _Tree, run_tree: ast.Module, alias: str) -> list[str]:
    """The string values of the enum imported into run.py under ``alias``."""
    for node in ast.walk(run_tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for name in node.names:
                if (name.asname or name.name) == alias:
                    source = wheel.read(node.module.replace(".", "/") + ".py").decode()
                    for cls in ast.walk(ast.parse(source)):
                        if isinstance(cls, ast.ClassDef) and cls.name == name.name:
                            return [
                                stmt.value.value
                                for stmt in cls.body
                                if isinstance(stmt, ast.Assign)
                                and isinstance(stmt.value, ast.Constant)
                                and isinstance(stmt.value.value, str)
                            ]
    raise ValueError(f"enum {alias} not found in the wheel")


def _choices(wheel: _Tree, tree: ast.Module, node: ast.expr) -> list | None:
    try:
        return list(ast.literal_eval(node))
    except ValueError:
        pass
    if isinstance(node, ast.ListComp) and isinstance(node.generators[0].iter, ast.Name):
        return _enum_values(wheel, tree, node.generators[0].iter.id)
    raise ValueError(f"choices not understood: {ast.dump(node)}")


def _version(tree: _Tree) -> str:
    for line in tree.read("torch/version.py").decode().splitlines():
        if line.startswith("__version__"):
            return ast.literal_eval(line.split("=", 1)[1].split("#")[0].strip())
    raise ValueError("no __version__ in torch/version.py")


def _option(wheel: _Tree, tree: ast.Module, call: ast.Call) -> dict:
    """One ``add_argument`` call as data."""
    names = [a.value for a in call.args if isinstance(a, ast.Constant)]
    kw = {k.arg: k.value for k in call.keywords}
    action = kw.get("action")
    action_name = getattr(action, "id", None) or getattr(action, "value", None)
    nargs = kw.get("nargs")
    if isinstance(nargs, ast.Name):  # argparse.REMAINDER
        nargs_value = "..." if nargs.id == "REMAINDER" else nargs.id
    else:
        nargs_value = ast.literal_eval(nargs) if nargs is not None else None
    type_name = getattr(kw.get("type"), "id", None)
    return {
        "names": names,
        "takes_value": action_name not in FLAG_ACTIONS,
        "nargs": nargs_value,
        "choices": _choices(wheel, tree, kw["choices"]) if "choices" in kw else None,
        "type": type_name if type_name in ("int", "float") else "str",
    }


def extract(path: Path) -> dict:
    """The option table of a wheel's torchrun, or of the torch installed under ``path``."""
    wheel = _Tree(path)
    tree = ast.parse(wheel.read(RUN_PY).decode())
    (func,) = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "get_args_parser"
    ]
    entries = [
        _option(wheel, tree, call)
        for call in ast.walk(func)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "add_argument"
    ]
    return {
        "torch": _version(wheel),
        "wheel": path.name if path.is_file() else None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None,
        "source": RUN_PY,
        "made_by": "tests/launchers/extract_torchrun_options.py WHEEL",
        "options": sorted(
            (e for e in entries if e["names"][0].startswith("-")), key=lambda e: e["names"][0]
        ),
        "positionals": [e for e in entries if not e["names"][0].startswith("-")],
    }


if __name__ == "__main__":
    json.dump(extract(Path(sys.argv[1])), sys.stdout, indent=1)
    sys.stdout.write("\n")
