"""Output paths checked before any work: an unwritable place found at the end loses the run.

One rule for every tool (training's ``--save``/``--metrics-jsonl``/``--tensorboard-dir``,
preprocessing's ``--output-prefix``/``--stats-json``/``--tmp-dir``): the path is of the right
kind where it exists (a directory, or a file), and the nearest existing directory above it is a
directory this process may write into. Nothing is created: a refused run leaves no trace.
"""

from __future__ import annotations

import os
from pathlib import Path

from megatron_dscoder.errors import UserError


class OutputPathError(UserError, ValueError):
    """An output path that cannot be written; the message names the flag and the path."""


def check_output_path(path: str | Path, flag: str, *, directory: bool) -> None:
    """Refuse ``path`` (a directory to write into, or a file to write) that cannot be written."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "is not a directory" if directory else "is a directory"
        raise OutputPathError(f"{flag} {path} {kind}")
    place = path if directory and path.exists() else path.absolute().parent
    while not place.exists():
        place = place.parent
    if not place.is_dir():
        raise OutputPathError(f"{flag} {path}: {place} is not a directory")
    if not os.access(place, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: {place} is not writable")
