"""Fixtures for training tests: small real corpora in Megatron's format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import stdlib_texts

CODE_MODULES = (
    "difflib.py",
    "argparse.py",
    "dataclasses.py",
    "textwrap.py",
    "string.py",
    "json/encoder.py",
    "json/decoder.py",
    "json/__init__.py",
)


def write_prefix(prefix: Path, docs: list[list[int]], dtype=np.uint16) -> Path:
    """Write documents with megatron-core's own IndexedDatasetBuilder (EOS already appended)."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for doc in docs:
        builder.add_item(torch.tensor(doc, dtype=torch.int64))
        builder.end_document()
    builder.finalize(str(prefix) + ".idx")
    return prefix


@pytest.fixture(scope="session")
def token_corpus(tiny_tokenizer_dir, tmp_path_factory) -> dict:
    """Two prefixes ("code": stdlib modules in 40-line chunks, "prose": their docstrings)."""
    from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids

    tok = load_tokenizer(tiny_tokenizer_dir)
    eos = special_token_ids(tok).eos
    out = tmp_path_factory.mktemp("corpus")
    chunks = []
    for text in stdlib_texts(CODE_MODULES):
        lines = text.splitlines(keepends=True)
        chunks += ["".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    prose = [c for c in chunks if '"""' in c]
    code = [e.ids + [eos] for e in tok.encode_batch(chunks)]
    english = [e.ids + [eos] for e in tok.encode_batch(prose)]
    return {
        "tokenizer": tiny_tokenizer_dir,
        "eos": eos,
        "code": write_prefix(out / "code", code),
        "prose": write_prefix(out / "prose", english),
    }
