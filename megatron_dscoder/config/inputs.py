"""Input files and model directories of the tools (generate, eval), checked before any work:
one line naming the flag, the file and the problem (a :class:`~megatron_dscoder.errors.UserError`,
exit 2). Numeric flags are checked by their config dataclasses
(:func:`megatron_dscoder.config.flags.require_positive`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from megatron_dscoder.errors import UserError


class InputError(UserError, ValueError):
    """An input file or directory that cannot be used at all; the message names it."""


def read_text_file(path: str, flag: str) -> str:
    """The UTF-8 text of ``path``; one line naming the flag, the file and the problem otherwise
    (a FIFO or device is refused unread: reading it could block forever)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{flag} {path}: a directory, not a file")
        if not stat.S_ISREG(mode):
            raise InputError(f"{flag} {path}: not a regular file (a FIFO, socket or device)")
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
