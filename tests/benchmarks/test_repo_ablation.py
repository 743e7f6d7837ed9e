"""``benchmarks/repo_ablation.py --scale smoke`` end to end: repositories split by repository,
tokenizer, preprocessing in both layouts, training, HF export and the cross-file measurement."""

from __future__ import annotations

import json
import math
import sys

from tests.benchmarks import smokes
from tests.launch import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import repo_ablation
import repo_crossfile

SETTINGS = ("repo-level", "file-level")


def test_smoke_scale_runs_both_layouts(tmp_path):
    status, output, tmp_path = smokes.result(__file__, tmp_path)
    assert status == 0, output[-4000:]
    report = json.loads((tmp_path / "results.json").read_text())
    seeds = report["config"]["seeds"]
    assert sorted((r["setting"], r["seed"]) for r in report["runs"]) == sorted(
        (s, seed) for s in SETTINGS for seed in seeds
    )
    # The layout reached the data, and nothing else did: the same files and tokens, grouped
    # into fewer documents (dependency-ordered repository samples) in the repository layout.
    repo, files = report["data"]["repo-level"], report["data"]["file-level"]
    assert repo["files_out"] == files["files_out"] == report["corpus"]["train_files"]
    assert repo["tokens"] == files["tokens"]
    assert files["documents_out"] == files["files_out"] > repo["documents_out"] > 0
    # Held-out repositories are never trained on.
    trained = {json.loads(line)["repo"] for line in open(tmp_path / "train.jsonl")}
    assert trained and not trained & set(report["corpus"]["heldout_repos"])
    bound = 1.5 * math.log(report["config"]["vocab"] + 128)
    cases = {r["setting"]: r["cases"] for r in report["runs"]}
    for run in report["runs"]:
        for key in repo_ablation.METRICS:
            assert math.isfinite(run[key]), (key, run)
        for key in ("loss_related", "loss_unrelated", "ident_related", "ident_unrelated"):
            assert 0 < run[key] < bound, (key, run)
        assert run["gain"] == run["loss_unrelated"] - run["loss_related"]
        # Both conditions of every case score the same tokens, of files from two repositories.
        assert run["scored_tokens"] == sum(c["tokens"] for c in run["cases"]) > 0
        assert run["ident_tokens"] > 0  # some imported names were scored
        assert len({c["repo"] for c in run["cases"]}) >= 2
    # The same held-out tokens for both layouts.
    assert [(c["path"], c["tokens"]) for c in cases["repo-level"]] == [
        (c["path"], c["tokens"]) for c in cases["file-level"]
    ]
    table = (tmp_path / "repo_ablation.md").read_text()
    assert all(f"| {s} |" in table for s in SETTINGS) and "nan" not in table
    assert (tmp_path / "repo_ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_cases_follow_the_dependency_order():
    files = {
        "pkg/__init__.py": "from .api import run\n",
        "pkg/api.py": "from pkg.core import Engine\nfrom . import util\n\ndef run():\n    pass\n",
        "pkg/core.py": "from .util import helper\n\nclass Engine:\n    pass\n",
        "pkg/util.py": "def helper():\n    return 1\n",
        "pkg/alone.py": "import os\n",
    }
    cases = {c["path"]: c["imports"] for c in repo_ablation.import_cases("r/pkg", files, 0)}
    # util before core (core depends on it), as in the repository-level sample
    assert cases == {
        "pkg/__init__.py": ["pkg/api.py"],
        "pkg/api.py": ["pkg/util.py", "pkg/core.py"],
        "pkg/core.py": ["pkg/util.py"],
    }
    assert repo_crossfile.top_level_names(files["pkg/api.py"] + "X: int = 1\n__all__ = []\n") == {
        "run",
        "X",
    }
    assert repo_crossfile.top_level_names("def broken(:\n") == set()
