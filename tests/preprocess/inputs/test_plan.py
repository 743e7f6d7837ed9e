"""Planning on the driver: references in input order, directories sized without a full walk."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from megatron_dscoder.preprocess.inputs import plan
from megatron_dscoder.preprocess.inputs.plan import JsonlRange, RepoDirs, input_sizes, plan_refs


def checkout(root: Path, repos: int, files: int = 2, size: int = 100) -> Path:
    for r in range(repos):
        for f in range(files):
            path = root / f"repo{r:03d}" / "src" / f"m{f}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x" * size)
        (root / f"repo{r:03d}" / "README.bin").write_bytes(b"\0" * 999)  # no language: not text
    (root / "loose.py").write_text("y" * 7)
    return root


def test_directory_size_is_exact_when_small_and_sampled_when_large(tmp_path: Path) -> None:
    small = checkout(tmp_path / "small", repos=10)
    assert input_sizes((str(small),)) == (10 * 2 * 100 + 7,) * 2
    large = checkout(tmp_path / "large", repos=plan.SIZE_SAMPLE * 3)
    walked = []
    original = plan._repo_text_bytes

    def spy(root: str, repo: str) -> int:
        walked.append(repo)
        return original(root, repo)

    plan._repo_text_bytes = spy
    try:
        text, _ = input_sizes((str(large),))
    finally:
        plan._repo_text_bytes = original
    assert len(walked) == plan.SIZE_SAMPLE  # not every repository
    exact = plan.SIZE_SAMPLE * 3 * 200 + 7
    assert abs(text - exact) / exact < 0.02


def test_references_keep_input_order_across_threads(tmp_path: Path) -> None:
    inputs = []
    for i in range(40):
        path = tmp_path / f"part{i:02d}.jsonl"
        path.write_text('{"text": "a"}\n' * (i + 1))
        inputs.append(str(path))
    repos = checkout(tmp_path / "checkout", repos=5)
    inputs.insert(7, str(repos))
    (tmp_path / "empty.jsonl").write_text("")
    inputs.append(str(tmp_path / "empty.jsonl"))
    bad: Counter[str] = Counter()
    refs = plan_refs(tuple(inputs), partition_bytes=30, repos_per_task=2, bad=bad)
    sources = [r.source for r in refs]
    assert sorted(set(sources), key=sources.index) == inputs[:-1]  # the empty file has none
    assert [r.repos for r in refs if isinstance(r, RepoDirs)] == [
        ("", "repo000"),
        ("repo001", "repo002"),
        ("repo003", "repo004"),
    ]
    first = [r for r in refs if isinstance(r, JsonlRange) and r.source == inputs[3]]
    assert [(r.start, r.end) for r in first] == [(0, 30), (30, 56)]
    assert bad == {"empty_file": 1}
