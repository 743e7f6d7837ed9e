"""The recipes of ``docs/ARCHITECTURE.md`` work exactly as written.

Each Python block there that opens with ``# megatron_dscoder/PATH, WHERE`` is applied to a copy of
the package: ``(new)`` writes the file, ``in class C`` adds the lines after C's last field,
``in LIST`` before the closing bracket of that list, ``before NAME`` above a top-level
definition, ``with the imports`` after the last top-level import (indented to their place, and
nothing else changed). Then, in a fresh interpreter on that copy:

- the preprocessing stage: ``--drop-gpl`` exists, a run with it drops the GPL file and reports
  the stage in ``dropped_by_stage`` and ``stage_seconds_summed``, a run without it keeps it, and
  ``lint-imports`` still passes (the recipe needs no import trick);
- the metric sink: ``--metrics-csv`` exists and the sink writes its rows.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"
HEADER = re.compile(r"# (megatron_dscoder/\S+\.py)(?:,| )\s*(.*)")


def blocks() -> list[tuple[str, str, str]]:
    """(path, where, code) of every applicable Python block, in order."""
    found = []
    for code in re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S):
        first, _, rest = code.partition("\n")
        if match := HEADER.fullmatch(first):
            found.append((match.group(1), match.group(2).strip(), rest))
    return found


def _names(node: ast.stmt) -> list[str]:
    """The names a top-level statement defines."""
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _insert(source: str, where: str, code: str) -> str:
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    body = tree.body
    if where == "with the imports":
        at = max(n.end_lineno for n in body if isinstance(n, ast.Import | ast.ImportFrom))
        return "".join(lines[:at]) + code + "".join(lines[at:])
    kind, _, name = where.partition(" ")
    if kind == "in" and name.startswith("class "):
        [cls] = [n for n in body if isinstance(n, ast.ClassDef) and n.name == name[6:]]
        at = max(n.end_lineno for n in cls.body if isinstance(n, ast.AnnAssign))
        return "".join(lines[:at]) + textwrap.indent(code, "    ") + "".join(lines[at:])
    if kind == "in":
        [node] = [
            n for n in body if isinstance(n, ast.Assign | ast.AnnAssign) and name in _names(n)
        ]
        at = node.value.end_lineno - 1  # the line of the closing bracket
        return "".join(lines[:at]) + textwrap.indent(code, "    ") + "".join(lines[at:])
    if kind == "before":
        [node] = [n for n in body if name in _names(n)]
        at = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        return "".join(lines[:at]) + code + "\n\n" + "".join(lines[at:])
    raise AssertionError(f"unknown place {where!r} in docs/ARCHITECTURE.md")


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("documented")
    shutil.copytree(REPO / "megatron_dscoder", root / "megatron_dscoder",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "pyproject.toml", root)
    applied = blocks()
    assert {p for p, _, _ in applied} >= {
        "megatron_dscoder/preprocess/stages/license.py",
        "megatron_dscoder/training/metrics.py",
    }
    for path, where, code in applied:
        target = root / path
        if where == "(new)":
            target.write_text(code)
        else:
            target.write_text(_insert(target.read_text(), where, code))
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)


def test_the_documented_stage_runs_in_its_place(
    applied: Path, tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    corpus = tmp_path / "in.jsonl"
    texts = ["def f(x):\n    return x + 1\n", "# SPDX-License-Identifier: GPL-3.0\nx = 2\n"]
    corpus.write_text("".join(json.dumps({"text": t, "path": f"m{i}.py"}) + "\n"
                              for i, t in enumerate(texts)))  # fmt: skip
    base = [sys.executable, "-m", "megatron_dscoder.preprocess.cli", "--input", str(corpus),
            "--tokenizer-model", str(tiny_tokenizer_dir), "--workers", "1", "--no-progress",
            "--no-dedup", "--no-decontaminate", "--no-quality", "--fim-rate", "0"]  # fmt: skip
    stats = {}
    for name, extra in (("on", ["--drop-gpl"]), ("off", [])):
        out = tmp_path / name
        done = _run(applied, *base, "--output-prefix", str(out / "d"),
                    "--stats-json", str(out / "stats.json"), *extra)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        stats[name] = json.loads((out / "stats.json").read_text())
    assert stats["on"]["dropped_by_stage"] == {"license": 1}
    assert stats["on"]["documents_out"] == 1 and "license" in stats["on"]["stage_seconds_summed"]
    assert stats["off"]["dropped_by_stage"] == {} and stats["off"]["documents_out"] == 2
    lint = Path(sys.executable).with_name("lint-imports")
    if lint.exists():
        checked = _run(applied, str(lint), "--no-cache")
        assert checked.returncode == 0, checked.stdout[-2000:]


def test_the_documented_sink_writes_its_rows(applied: Path, tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    program = f"""
from megatron_dscoder.config.cli import build_parser
from megatron_dscoder.config.run import LoggingConfig
from megatron_dscoder.training.metrics import MetricsLogger, sinks_for
args = build_parser().parse_args(["--model", "debug", "--metrics-csv", {str(csv)!r}])
logger = MetricsLogger(sinks_for(LoggingConfig(metrics_csv=args.metrics_csv), {{}}))
logger.log({{"iteration": 3, "lm_loss": 2.5, "lr": 1e-4}}, step=3)
logger.close()
"""
    done = _run(applied, sys.executable, "-c", program)
    assert done.returncode == 0, done.stderr[-2000:]
    assert csv.read_text() == "3,2.5,0.0001\n"
