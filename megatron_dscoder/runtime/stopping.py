"""Leaving a run cleanly before ``--train-iters``: preemption (SIGTERM) and a time budget.

A cluster scheduler ends a job with SIGTERM and, a grace period later, SIGKILL (SLURM:
``#SBATCH --signal=TERM@180`` sends it 180 s before the time limit, see
``examples/slurm_pretrain.sbatch``). With ``--exit-signal-handler`` the signal only sets a flag;
at the end of each iteration the ranks all-reduce (MAX) their flags and their "time is up"
(``--exit-duration-in-mins``), so all stop after the same iteration, checkpoint it and exit 0.
One small all-reduce per iteration, only when one of the two flags is given.

torchrun forwards SIGTERM to its workers and kills them a grace period later: 30 s on torch
< 2.12; from 2.12 ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, which the launchers raise so that one
iteration plus a save fit (docs/gpu.md).
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from megatron_dscoder.parallel.distributed import any_rank

logger = logging.getLogger(__name__)


class StopConditions:
    """The collective "stop after this iteration?" of a run; :meth:`close` restores SIGTERM."""

    def __init__(
        self, *, exit_signal_handler: bool, exit_duration_in_mins: float | None, started: float
    ) -> None:
        self._deadline = started + exit_duration_in_mins * 60 if exit_duration_in_mins else None
        self._received: int | None = None
        self._previous = None
        if exit_signal_handler:
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        self.enabled = exit_signal_handler or self._deadline is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:
            logger.warning("received signal %d: checkpoint at the end of this iteration", signum)
        self._received = signum

    def reason(self) -> str | None:
        """Collective (when enabled): why every rank stops now, or None to go on."""
        if not self.enabled:
            return None
        timed_out = self._deadline is not None and time.monotonic() >= self._deadline
        signalled, timed_out = any_rank(self._received is not None, timed_out)
        if signalled:
            return "termination signal"
        if timed_out:
            return "--exit-duration-in-mins reached"
        return None

    def close(self) -> None:
        """Give SIGTERM back its previous handler."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
