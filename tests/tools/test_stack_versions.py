"""``tools/stack_versions.py``: the stack the Dockerfile compares before and after pip."""

from __future__ import annotations

import subprocess
import sys

import torch

from tests.launch import REPO


def test_lists_the_stack_sorted_one_per_line():
    out = subprocess.run(
        [sys.executable, "tools/stack_versions.py"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == sorted(lines)
    versions = dict(line.rsplit(" ", 1) for line in lines)
    assert versions["torch"] == torch.__version__
    assert "numpy" in versions and "nccl (torch build)" in versions
    assert not any(name.startswith(("transformers", "wandb")) for name in versions)
