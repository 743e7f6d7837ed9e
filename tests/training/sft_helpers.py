"""A 20-example instruction set and its preprocessing, shared by the SFT tests."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "candle", "forest",
         "silver", "garden", "rocket", "winter", "yellow", "button", "planet", "shadow", "bridge",
         "copper")  # fmt: skip


SYSTEM = "Answer with code."
"""A short system message: a whole conversation fits the debug model's 128 positions."""


def prompt(i: int) -> str:
    return f"Write a function named {WORDS[i]} that returns {i}."


def answer(i: int) -> str:
    return f"def {WORDS[i]}():\n    return {i}"


def instruction_set() -> list[dict]:
    """Twenty chat records: each asks for a function of a given name returning a number."""
    return [
        {"messages": [{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": prompt(i)},
                      {"role": "assistant", "content": answer(i)}]}
        for i in range(len(WORDS))
    ]  # fmt: skip


def write_instruction_set(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in instruction_set()))
    return path
