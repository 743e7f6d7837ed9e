"""Argument types and input checks for the tools' command lines (generate, eval, convert).

Each type rejects, in argparse's one-line ``argument --flag: ...`` form (exit 2), the values that
would silently produce a wrong result: ``--samples 0`` (pass@1 = 1.0 with nothing run),
``--timeout -1`` or NaN (every program "times out"), ``--limit 0`` (read as "all"),
``--max-new-tokens -1``, ``--temperature -1`` or NaN.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from megatron_dscoder.errors import UserError


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A finite number in (0, 1]."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


class InputError(UserError, ValueError):
    """An input file or directory that cannot be used; the message names it."""


def read_text_file(path: str, flag: str) -> str:
    """The UTF-8 text of ``path``; one line naming the flag, the file and the problem otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"{flag} {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{flag} {path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "re-encode it as UTF-8"
        ) from None


def check_model_dir(path: str) -> None:
    """Refuse a model directory that is missing, or whose weights are only pickled
    (``pytorch_model.bin``: unpickling can run code), before transformers reads it."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"--model {path}: not a directory")
    if any(root.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    if pickled:
        raise InputError(
            f"--model {root / pickled[0]}: pickled weights are refused (loading them can run "
            "code); give a directory with safetensors weights"
        )
    raise InputError(f"--model {path}: no *.safetensors weights")
