"""A 20-example instruction set and its preprocessing, shared by the SFT tests."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "candle", "forest",
         "silver", "garden", "rocket", "winter", "yellow", "button", "planet", "shadow", "bridge",
         "copper")  # fmt: skip


def instruction_set() -> list[dict[str, str]]:
    """Twenty Alpaca records: each names a word and asks for a function returning it."""
    return [
        {"instruction": f"Write a function named {w} that returns {i}.",
         "output": f"def {w}():\n    return {i}"}
        for i, w in enumerate(WORDS)
    ]  # fmt: skip


def write_instruction_set(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in instruction_set()))
    return path
