"""Fixtures of the preprocessing tests: one local-mode Ray instance for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """Ray in local mode on 2 CPUs, started once (start-up takes ~10 s) and shut down at the end."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def deepseek_tokenizer_dir(
    tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny trained BPE rebuilt to DeepSeek-Coder's published tokenizer structure."""
    from preprocess_helpers import deepseek_layout

    from megatron_dscoder.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("deepseek_layout")
    deepseek_layout(load_tokenizer(tiny_tokenizer_dir)).save(str(out / "tokenizer.json"))
    return out
