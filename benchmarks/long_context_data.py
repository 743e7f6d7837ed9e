"""The held-out and training data of ``long_context_eval.py``: repositories of real Python split by
repository, and held-out windows laid out as the preprocessor lays out repositories.

A repository is a top-level package of this interpreter's standard library or site-packages
(``stdlib/email``, ``site/jinja2``; a top-level module is a repository of one file).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fim_ablation import python_files

if TYPE_CHECKING:
    from long_context_eval import Scale

SEED = 1234  # the preprocessing seed (Algorithm 1 tie-breaks), shared by training and held-out


def _h(text: str) -> int:
    """A stable 64-bit hash (held-out choice and window order do not depend on PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def repositories(scale: Scale) -> dict[str, list[tuple[str, Path]]]:
    """Repository name -> its (path inside the repository, file) pairs, in hash order of the
    name; files outside 500..100,000 bytes and packages over ``max_repo_chars`` left out."""
    repos: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    if scale.stdlib_only:  # the stdlib part of python_files(), without the site-packages scan
        root = Path(sysconfig.get_paths()["stdlib"])
        found = [(f"stdlib/{p.relative_to(root)}", p) for p in root.rglob("*.py")]
        found = [(rel, p) for rel, p in found if "site-packages" not in rel]
    else:
        found = python_files()
    for rel, path in found:
        label, inner = rel.split("/", 1)
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if 500 <= size <= 100_000:
            repos[f"{label}/{inner.split('/', 1)[0]}"].append((inner, path))
    keep = {}
    for name in sorted(repos, key=lambda n: (_h(n), n)):
        files = sorted(repos[name])
        if sum(p.stat().st_size for _, p in files) <= scale.max_repo_chars:
            keep[name] = files
    return keep


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def build_corpus(scale: Scale, work: Path) -> tuple[Path, dict[str, list[tuple[str, str]]]]:
    """Training JSONL (one record per file, with its repository) and the held-out repositories'
    files. Held out: the first ``heldout_repos`` standard-library repositories (hash order) of
    at least 60,000 characters, so that they hold documents longer than the extended context
    (and any Python 3.11 reproduces the evaluation set)."""
    train_path, heldout, total = work / "train.jsonl", {}, 0
    tmp = train_path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for name, files in repositories(scale).items():
            wanted = name.startswith("stdlib/") and len(heldout) < scale.heldout_repos
            if total >= scale.corpus_chars and not wanted:
                continue
            texts = [(inner, t) for inner, p in files if (t := _read(p)) is not None]
            size = sum(len(t) for _, t in texts)
            long_enough = size >= min(6e4, scale.corpus_chars / 4)
            if wanted and long_enough:
                heldout[name] = texts
                continue
            if total >= scale.corpus_chars:
                continue
            for inner, text in texts:
                f.write(json.dumps({"text": text, "repo": name, "path": inner}) + "\n")
            total += size
    os.replace(tmp, train_path)
    return train_path, heldout


def heldout_windows(
    heldout: dict[str, list[tuple[str, str]]], tok_dir: Path, length: int, limit: int
) -> list[dict]:
    """Non-overlapping windows of ``length + 1`` token ids of the held-out repositories'
    repository-level samples (EOS first), at most 4 per sample and 8 per repository."""
    from megatron_dscoder.preprocess.records import Record
    from megatron_dscoder.preprocess.repo.order import repo_samples
    from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids, text_tokenizer

    tok = text_tokenizer(load_tokenizer(tok_dir))
    eos = special_token_ids(tok, require=("eos",), source=str(tok_dir)).eos
    windows = []
    for repo, files in heldout.items():
        records = [Record(text=t, repo=repo, path=p, lang="python") for p, t in files]
        per_repo = []
        for sample in repo_samples(repo, records, SEED):
            ids = [eos, *tok.encode(sample.text, add_special_tokens=False).ids, eos]
            for k in range(min(4, (len(ids) - 1) // length)):
                window = ids[k * length : (k + 1) * length + 1]
                per_repo.append({"repo": repo, "sample": sample.paths[0], "k": k, "ids": window})
        windows += sorted(per_repo, key=lambda w: _h(f"{w['sample']}#{w['k']}"))[:8]
    windows.sort(key=lambda w: _h(f"{w['repo']}/{w['sample']}#{w['k']}"))
    return windows[:limit]
