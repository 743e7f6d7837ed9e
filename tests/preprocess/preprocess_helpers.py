"""Helpers shared by the preprocessing tests: writing inputs, running, reading the output back."""

from __future__ import annotations

import gzip
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import zstandard
from tokenizers import Tokenizer

from megatron_dscoder.preprocess.pipeline import PipelineConfig, run_pipeline
from megatron_dscoder.tokenizer import load_tokenizer


def write_jsonl(path: Path, records: list[Any], raw_lines: list[bytes] = ()) -> Path:
    """JSONL (compressed by suffix: .gz, .zst) of records, plus raw (possibly bad) lines."""
    data = b"".join(orjson.dumps(r) + b"\n" for r in records) + b"".join(
        line + b"\n" for line in raw_lines
    )
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def run(tmp_path: Path, inputs: list[Path], tokenizer: Path, **options: Any) -> dict[str, Any]:
    """Run the pipeline in-process (workers=1 unless given) into tmp_path/out/data."""
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    config = PipelineConfig(
        inputs=[str(p) for p in inputs],
        tokenizer_path=str(tokenizer),
        output_prefix=str(options.pop("prefix", tmp_path / "out" / "data")),
        **options,
    )
    return run_pipeline(config)


def read_documents(prefix: Path) -> list[np.ndarray]:
    """Documents as megatron-core's own IndexedDataset reads them."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))
    return [np.array(dataset[i]) for i in range(len(dataset))]


def tokenizer(tok_dir: Path) -> Tokenizer:
    return load_tokenizer(tok_dir)


def decode(tok: Tokenizer, ids: np.ndarray) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False)


def stdlib_text(*names: str) -> str:
    """Concatenated standard-library sources (found through sysconfig)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return "\n".join((root / name).read_text("utf-8") for name in names)
