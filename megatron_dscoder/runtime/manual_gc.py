"""Megatron-LM's ``--manual-gc``: Python's garbage collector runs only where every rank runs it.

The automatic collector starts a full collection whenever allocation counts cross its
thresholds, at a different moment on each rank; at hundreds of ranks one of them is almost always
collecting, and every collective waits for it. With ``--manual-gc`` the collector is disabled for
the run and collects at points every rank reaches together: at the start, every
``--manual-gc-interval`` iterations (0: never between iterations), and before and after each
evaluation and checkpoint. Reference cycles are still freed, only later; plain reference counting
(which frees almost every tensor) is unaffected.
"""

from __future__ import annotations

import gc


class ManualGC:
    """Context manager for one training run; a no-op unless ``enabled``."""

    def __init__(self, enabled: bool, interval: int = 0) -> None:
        self.enabled, self.interval = enabled, interval
        self._was_enabled = gc.isenabled()

    def __enter__(self) -> ManualGC:
        if self.enabled:
            self._was_enabled = gc.isenabled()
            gc.disable()
            gc.collect()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._was_enabled:
            gc.enable()  # the process may go on (several runs in one process, tests)

    def step(self, iteration: int) -> None:
        """After ``iteration``: collect when it is a multiple of the interval."""
        if self.enabled and self.interval and iteration % self.interval == 0:
            gc.collect()

    def collect(self) -> None:
        """Around evaluation and checkpoints."""
        if self.enabled:
            gc.collect()
