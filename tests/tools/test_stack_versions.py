"""``tools/stack_versions.py``: the stack the Dockerfile compares before and after pip."""

from __future__ import annotations

import runpy

import torch

from tests.launch import REPO

SCRIPT = str(REPO / "tools" / "stack_versions.py")


def test_lists_the_stack_sorted_one_per_line(capsys):
    runpy.run_path(SCRIPT, run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines == sorted(lines)
    versions = dict(line.rsplit(" ", 1) for line in lines)
    assert versions["torch"] == torch.__version__
    assert "numpy" in versions and "nccl (torch build)" in versions
    assert not any(name.startswith(("transformers", "wandb")) for name in versions)
