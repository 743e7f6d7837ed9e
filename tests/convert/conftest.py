"""Session fixtures for the conversion tests: small real tokenizers, and every conversion case
run once (:func:`tests.convert.runs.build_runs`) for all the test modules here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.convert.helpers import make_tokenizer

TOKENS = 320
"""Tokenizer length of the fixture; the debug model pads it to 384 embedding rows."""


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tok", TOKENS)


@pytest.fixture(scope="session")
def big_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """480 tokens: more than the 384 padded rows of a model made for :data:`TOKENS`."""
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer_big") / "tok", 480)


@pytest.fixture(scope="session")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, big_tokenizer_dir: Path
) -> SimpleNamespace:
    from tests.convert.runs import build_runs  # it reads TOKENS from this module

    return build_runs(tmp_path_factory, tokenizer_dir, big_tokenizer_dir)
