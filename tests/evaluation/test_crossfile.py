"""Cross-file context by BM25 on a real repository: the standard library's ``json`` package.

``json/__init__.py`` imports ``JSONDecoder`` from ``json/decoder.py``; completing it right after
``cls = JSONDecoder`` (its keyword arguments ``object_hook``, ``parse_float``... just above),
the retrieved context must hold the chunk of ``decoder.py`` that defines ``JSONDecoder`` and
its ``__init__``, within the token budget, each chunk under its path comment.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from megatron_dscoder.evaluation import generate
from megatron_dscoder.evaluation.crossfile import CHUNK_LINES, cross_file_prompt, retrieve
from megatron_dscoder.tokenizer import load_tokenizer

CURSOR = "    if cls is None:\n        cls = JSONDecoder\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib / "json", root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _prefix(repo: Path) -> str:
    text = (repo / "json" / "__init__.py").read_text()
    return text[: text.index(CURSOR) + len(CURSOR)]


def _definition_lines(repo: Path) -> tuple[int, int]:
    lines = (repo / "json" / "decoder.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines, 1) if line.startswith("class JSONDecoder"))
    end = next(i for i, line in enumerate(lines, 1) if line.startswith("    def decode(self"))
    return start, end


def test_retrieves_the_defining_files_chunk_within_the_budget(repo, tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    count = lambda text: len(tok.encode(text, add_special_tokens=False).ids)  # noqa: E731
    prefix = _prefix(repo)
    prompt, chunks = cross_file_prompt(repo, "json/__init__.py", prefix, count)
    assert chunks and chunks[0].path == "json/decoder.py"  # the best chunk: the imported module
    start, end = _definition_lines(repo)
    defining = [c for c in chunks if c.path == "json/decoder.py"
                and start - CHUNK_LINES < c.first_line <= end]  # fmt: skip
    assert defining, [(c.path, c.first_line) for c in chunks]
    assert "json/__init__.py" not in {c.path for c in chunks}
    context = prompt[: -len(prefix)]
    assert prompt.endswith(prefix) and context.endswith("# json/__init__.py\n")
    assert count(context) - count("# json/__init__.py\n") <= 512
    assert all(f"# {c.path}\n{c.text}" in context for c in chunks)
    assert context.rindex(f"# {chunks[0].path}\n{chunks[0].text}") > context.index(chunks[-1].text)
    few, small = cross_file_prompt(repo, "json/__init__.py", prefix, count, budget=100)
    assert count(few) - count(prefix) <= 100 + count("# json/__init__.py\n") and len(small) < len(
        chunks
    )
    alone, none = cross_file_prompt(repo, "json/__init__.py", prefix, count, budget=0)
    assert none == [] and alone == "# json/__init__.py\n" + prefix


def test_no_shared_identifier_retrieves_nothing(repo):
    assert cross_file_prompt(repo, "json/tool.py", "1 + 2\n", len)[1] == []
    assert retrieve([], "JSONDecoder", k=3) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--file", "json/__init__.py"], "--file needs --repo"),
        (["--repo", "{repo}"], "--repo needs --file"),
        (["--repo", "{repo}", "--file", "json/missing.py"], "no such file"),
        (["--repo", "{repo}", "--file", "json/__init__.py", "--prompt", "x"], "give no --prompt"),
        (["--repo", "{repo}", "--file", "json/__init__.py", "--repo-context-tokens", "-1"],
         "must be >= 0"),
    ],
)  # fmt: skip
def test_cli_refuses_bad_repo_arguments(repo, capsys, argv, message):
    argv = [a.format(repo=repo) for a in argv]
    assert generate.main(["--model", "unused", *argv]) == 2
    assert message in capsys.readouterr().err
