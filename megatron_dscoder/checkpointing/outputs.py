"""Output locations, checked before the model is built: writable, and ``--save`` this run's own.

``--metrics-jsonl`` and ``--tensorboard-dir`` are checked the same way. Found at the first save
(possibly hours in, possibly at the end) an unwritable directory loses the run; a directory holding
another run's checkpoints is worse: ``--keep-checkpoints`` would prune one run's checkpoints for the
other and a later ``--load`` would resume whichever is newer. Both are refused up front, naming the
directory.

There is deliberately no flag to share a directory between runs: "latest" in such a directory
means nothing. To continue the other run, ``--load`` its directory (the run then inherits its
``run_id``); to start afresh, give a new ``--save`` or remove the old checkpoints.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.paths import OutputPathError, check_output_path

OutputError = OutputPathError
"""An output location that cannot be used; the message names the flag and the path."""


def new_run_id() -> str:
    """A fresh identity for a run started from scratch (or a fine-tune: a new run)."""
    return uuid.uuid4().hex[:16]


def check_outputs(save: str | None, metrics_jsonl: str | None, tensorboard_dir: str | None) -> None:
    """Every output location of the run, before anything is computed."""
    if save:
        check_output_path(save, "--save", directory=True)
    if metrics_jsonl:
        check_output_path(metrics_jsonl, "--metrics-jsonl", directory=False)
    if tensorboard_dir:
        check_output_path(tensorboard_dir, "--tensorboard-dir", directory=True)


def check_own(save: str | Path, run_id: str, adopt_legacy: bool) -> None:
    """Refuse ``save`` if it holds checkpoints of another run.

    A checkpoint without a ``run_id`` (older versions) counts as this run's only when the run
    resumes from this very directory (``adopt_legacy``).
    """
    root = Path(save)
    foreign = {}
    for ckpt in checkpointing.complete_checkpoints(root):
        owner = checkpointing.run_id_of(ckpt)
        if owner != run_id and not (owner is None and adopt_legacy):
            foreign[ckpt.name] = owner or "unknown (no run_id)"
    if foreign:
        names = ", ".join(f"{name} (run {owner})" for name, owner in sorted(foreign.items()))
        raise OutputError(
            f"--save {root} holds checkpoints of another run: {names}; this run is {run_id}. "
            f"Use a new --save directory, remove them, or --load {root} to continue that run"
        )
