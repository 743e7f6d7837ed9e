"""Shared fixtures.

``tiny_tokenizer_dir`` (session scope) trains a small DeepSeek-Coder-style tokenizer (byte-level
BPE with DeepSeek-Coder's pre-tokenizer and all nine special tokens) with the same code as
``tools/train_tokenizer.py``, on a few standard-library modules, in about a second. Any test
that needs a real HF tokenizer directory (eos/pad/FIM ids, vocab size) can use it.

The hypothesis suites share two settings profiles, chosen by ``DSCODER_FUZZ_PROFILE``: ``ci``
(the default: few examples, derandomized, inside ``make test``) and ``fuzz`` (``make fuzz``).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from megatron_dscoder.preprocess.tokenizer.train import save_tokenizer_dir, train_tokenizer

#: Standard-library sources (present in every CPython >= 3.10) used as training text.
TRAINING_MODULES = ("json/__init__.py", "json/decoder.py", "json/encoder.py", "textwrap.py",
                    "string.py", "difflib.py", "argparse.py", "dataclasses.py")  # fmt: skip
TINY_VOCAB = 1500

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
settings.register_profile(
    "fuzz", max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("DSCODER_FUZZ_PROFILE", "ci"))


def stdlib_texts(names: tuple[str, ...] = TRAINING_MODULES) -> list[str]:
    """Texts of standard-library files (found through sysconfig, never a machine path)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [(root / name).read_text("utf-8") for name in names]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF tokenizer directory: 1,500 BPE tokens + DeepSeek-Coder's 9 special tokens."""
    out = tmp_path_factory.mktemp("tiny_tokenizer")
    return save_tokenizer_dir(train_tokenizer(stdlib_texts(), vocab_size=TINY_VOCAB), out)


@pytest.fixture(scope="session")
def deepseek_tokenizer_dir(
    tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny trained BPE rebuilt to DeepSeek-Coder's published tokenizer structure."""
    from megatron_dscoder.tokenizer import load_tokenizer
    from tests.preprocess.preprocess_helpers import deepseek_layout

    out = tmp_path_factory.mktemp("deepseek_layout")
    deepseek_layout(load_tokenizer(tiny_tokenizer_dir)).save(str(out / "tokenizer.json"))
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of the benchmarks' smokes run last: their smokes run meanwhile in the
    background (``tests/benchmarks/smokes.py``)."""
    from tests.benchmarks.smokes import SMOKES

    items.sort(key=lambda item: item.nodeid.split("::")[0] in SMOKES)  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.benchmarks import smokes

    if not session.config.option.collectonly:
        smokes.start({item.nodeid.split("::")[0] for item in session.items})


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.benchmarks import smokes

    smokes.stop()
