"""A marker file that says the workers finished cleanly, for the launcher to read.

On SIGTERM torchrun forwards the signal to its workers, waits for them, then re-raises the signal
as ``SignalException`` and exits 1, even when every worker checkpointed and exited 0
(``--exit-signal-handler``). The launcher (``examples/_launch.sh``) sets ``DSCODER_EXIT_MARKER``
to a file path; rank 0 writes the last iteration there once the run returned normally (its last
checkpoint complete: saves are collective). After a termination signal the launcher maps
torchrun's status to 0 when the marker is there, and keeps it otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "DSCODER_EXIT_MARKER"


def record(iteration: int, rank: int) -> None:
    """Rank 0: write ``iteration`` to the marker file, if the launcher asked for one."""
    path = os.environ.get(ENV)
    if not path or rank != 0:
        return
    tmp = Path(path + ".tmp")
    tmp.write_text(f"{iteration}\n")
    os.replace(tmp, path)
