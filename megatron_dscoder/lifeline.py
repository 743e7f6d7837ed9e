"""Make a helper process die with the process that started it.

A SIGKILLed driver cannot clean up after itself, so a pool worker must notice on its own that
its parent is gone; otherwise it keeps computing (and writing) for minutes. Call
:func:`die_with_parent` first thing in the worker (e.g. a pool initializer) with the parent's pid
as the parent saw it:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment its
  parent exits, however it exits. (Linux ties this to the parent *thread* that forked the
  worker, so start pools from a thread that outlives them, e.g. the main thread.)
- everywhere, a daemon thread that checks ``os.getppid()`` every ``interval`` seconds and
  ``os._exit``\\ s when the parent changed (the worker was re-parented to init or a subreaper);
  it also covers a parent that died before the ``prctl``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
#: Exit status of a worker that found its parent gone (128 + SIGKILL, as if it had been killed).
ORPHAN_EXIT = 128 + signal.SIGKILL


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` on Linux; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """End this process as soon as ``parent_pid`` is no longer its parent (see module doc)."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # died before the prctl took effect
        os._exit(ORPHAN_EXIT)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(ORPHAN_EXIT)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
