"""The import direction is enforced, not described: ``lint-imports`` (run by ``make lint``, the
contracts in ``pyproject.toml``) passes on the package and fails once an upward import is added,
even a lazy one inside a function; and the package keeps its shape (no module over 400 lines,
no folder over 12 modules, no ``TYPE_CHECKING`` block)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "megatron_dscoder"
MAX_LINES = 400
MAX_MODULES = 12


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(binary), "--no-cache"], cwd=root, env=env, capture_output=True, text=True
    )


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    pytest.importorskip("importlinter")
    shutil.copytree(PACKAGE, tmp_path / "megatron_dscoder", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    clean = lint_imports(tmp_path)
    assert clean.returncode == 0, clean.stdout[-2000:]

    registry = tmp_path / "megatron_dscoder" / "model" / "registry.py"
    registry.write_text(
        registry.read_text()
        + "\n\ndef _upward() -> None:\n"
        + "    from megatron_dscoder.training import loop  # noqa: F401\n"
    )
    stage = tmp_path / "megatron_dscoder" / "preprocess" / "stages" / "fim.py"
    stage.write_text(stage.read_text() + "\nfrom megatron_dscoder.preprocess import pipeline\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode == 1
    assert "megatron_dscoder.model.registry -> megatron_dscoder.training.loop" in broken.stdout
    assert "megatron_dscoder.preprocess.stages.fim -> megatron_dscoder.preprocess.pipeline" in (
        broken.stdout
    )


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_folder_over_12_modules() -> None:
    counts: dict[str, int] = {}
    for p in _modules():
        if p.name != "__init__.py":
            key = str(p.parent.relative_to(PACKAGE))
            counts[key] = counts.get(key, 0) + 1
    wide = {d: n for d, n in counts.items() if n > MAX_MODULES}
    assert wide == {}


def test_no_type_checking_block_hides_a_cycle() -> None:
    assert [str(p.relative_to(REPO)) for p in _modules() if "TYPE_CHECKING" in p.read_text()] == []
