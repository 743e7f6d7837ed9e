"""Processes die with the process that started them: no orphan keeps training or writing.

Used by training workers (tied to ``torchrun``) and by the preprocessing pool's workers (tied to
the tool), whose parent may be SIGKILLed and so cannot clean up after itself.

``torchrun`` starts each worker in a session of its own, so SIGKILL of ``torchrun`` (or of its
process group) reaches no worker: they would go on training and saving into ``--save``, racing
the restarted job. :func:`tie_to_launcher` (called first thing by ``pretrain``, only when a
launcher set ``LOCAL_RANK``) makes a worker follow its launcher:

- on Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``), and the
  same is armed in every child this worker forks (megatron-core's checkpoint writer processes,
  DataLoader workers), so they die with the worker; megatron-core's spawned results-queue
  manager is replaced by a tied one (:func:`tie_checkpoint_writer`, called before each save);
- everywhere a daemon thread polls ``os.getppid()`` once a second and kills the process when the
  parent changed (the portable fallback, and a second line should the launching thread differ).

The kernel ties the signal to the parent *thread*: a child forked by a thread that exits first
is killed too. megatron-core's writers and DataLoader workers are forked by the main thread.
A launcher that died before :func:`tie_to_launcher` ran (the first second of the interpreter)
is not noticed: the parent pid is read there. SIGKILL, not SIGTERM: a polite signal would run the
preemption handler, which starts a collective checkpoint with ranks that may already be gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from multiprocessing.managers import SyncManager

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_state: dict[str, int] = {}
_managers: list = []  # kept referenced: a collected manager shuts its server down


def _arm_parent_death_signal() -> bool:
    """Ask the kernel for SIGKILL when this process's parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _orphaned(expected_parent: int) -> bool:
    return os.getppid() != expected_parent


def _watch(expected_parent: int, interval_s: float) -> None:
    event = threading.Event()
    while not event.wait(interval_s):
        if _orphaned(expected_parent):
            logger.error("launcher (pid %d) is gone: stopping this worker", expected_parent)
            os.kill(os.getpid(), signal.SIGKILL)


def _before_fork() -> None:
    _state["forker"] = os.getpid()


def _after_fork_in_child() -> None:
    # The parent of a forked child is this worker; the watchdog thread is not copied by fork.
    _arm_parent_death_signal()
    if _orphaned(_state["forker"]):  # the worker died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """Initializer for a helper process (it runs in the child, e.g. a pool worker or a spawned
    manager): die as soon as ``parent`` (its parent's pid, as the parent saw it) is gone."""
    _arm_parent_death_signal()
    if _orphaned(parent):  # died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(
        target=_watch, args=(parent, interval_s), name="parent-watchdog", daemon=True
    ).start()


def tied_spawn_manager() -> SyncManager:
    """A started ``spawn`` SyncManager whose server process dies with this process.

    Spawned children exec a fresh interpreter (no fork hook runs), so the parent-death signal is
    armed by the manager's initializer instead.
    """
    import multiprocessing

    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
    return manager


def tie_checkpoint_writer() -> None:
    """megatron-core's checkpoint writer reports through a queue served by a spawned manager
    process, which would outlive a killed worker (and keep its resource tracker alive): serve
    it from a tied manager instead, created before megatron-core makes its own (idempotent)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        _managers.append(tied_spawn_manager())
        filesystem_async._results_queue = _managers[-1].Queue()


def tie_to_child_processes() -> None:
    """Arm the parent-death signal in every child this process forks from now on (once)."""
    if not _state.get("fork_hook"):
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _state["fork_hook"] = 1


def tie_to_launcher(interval_s: float = 1.0, *, force: bool = False) -> bool:
    """Die with the launcher; returns whether this process was tied (idempotent).

    Only a launched worker (``LOCAL_RANK`` set by torchrun and similar launchers) is tied, unless
    ``force``: a plain ``nohup python -m ...`` must survive its shell.
    """
    if "parent" in _state:
        return True
    if not (force or "LOCAL_RANK" in os.environ):
        return False
    parent = os.getppid()
    _state["parent"] = parent
    _arm_parent_death_signal()
    tie_to_child_processes()
    threading.Thread(
        target=_watch, args=(parent, interval_s), name="launcher-watchdog", daemon=True
    ).start()
    return True
