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

from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.pipeline import run_pipeline
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
    config = PreprocessConfig(
        inputs=[str(p) for p in inputs],
        tokenizer_model=str(tokenizer),
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


#: The 13 single Latin-1 characters DeepSeek-Coder's tokenizer adds (ids 32000-32012 there):
#: the byte values that never occur in UTF-8, as characters of the byte-level alphabet.
LATIN1_ADDED = "õ÷ÁýÀÿøúþüùöû"
#: Which of the nine DeepSeek strings the published tokenizer flags special: BOS and EOS only.
DEEPSEEK_SPECIAL_FLAGS = (True, True, False, False, False, False, False, False, False)


def deepseek_layout(tok: Tokenizer) -> Tokenizer:
    """Our trained BPE rebuilt to the structure of DeepSeek-Coder's published ``tokenizer.json``.

    The 13 Latin-1 byte characters leave the BPE vocabulary and come back as non-special added
    tokens right after it, then the nine DeepSeek strings with DeepSeek's flags (only BOS and EOS
    special); an empty ``Sequence`` normalizer; a ``ByteLevel`` post-processor (adds no BOS);
    merges stored as ``"a b"`` strings. Nothing is downloaded.
    """
    from megatron_dscoder.tokenizer import SPECIAL_TOKENS

    state = orjson.loads(tok.to_str())
    model = state["model"]
    kept = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    kept = [t for t in kept if t not in LATIN1_ADDED and t not in SPECIAL_TOKENS]
    model["vocab"] = {t: i for i, t in enumerate(kept)}
    pairs = [m if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    model["merges"] = [f"{a} {b}" for a, b in pairs if not any(c in LATIN1_ADDED for c in a + b)]
    added = [(c, False) for c in LATIN1_ADDED]
    added += list(zip(SPECIAL_TOKENS, DEEPSEEK_SPECIAL_FLAGS, strict=True))
    state["added_tokens"] = [
        {
            "id": len(kept) + i,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, (text, special) in enumerate(added)
    ]
    state["normalizer"] = {"type": "Sequence", "normalizers": []}
    state["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": False,
        "use_regex": True,
    }
    return Tokenizer.from_str(orjson.dumps(state).decode())
