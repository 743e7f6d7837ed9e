"""The run's work directory ``PREFIX.work-XXXXXXXX``: owned while in use, swept when abandoned.

A run keeps its shards, spill files and band records in a fresh directory next to the output
(or under ``--tmp-dir``) and removes it at the end, also on errors. A SIGKILLed run cannot, so
the directory says whether its owner is alive: the driver holds ``flock`` on ``.owner`` inside
it for the whole run (the kernel drops the lock when the driver dies, whatever kills it). The
next run with the same prefix and work root removes every ``PREFIX.work-*`` whose lock it can
take, i.e. whose run is dead, and leaves the others (a concurrent run) alone. A directory
without ``.owner`` is removed only when older than a minute (a run creates it right after the
directory). Where the file system refuses ``flock`` nothing is swept.

``--work-dir DIR`` names the directory instead (:meth:`WorkDir.keep`): it is created if
missing, locked the same way (a second live run on it is refused), stamped with the run's
fingerprint (``run.json``: the options that change the output) so that a rerun with other
options is refused instead of mixing results, and never removed: a rerun skips the tasks whose
completion markers it finds (:mod:`.markers`).

The names can never be mistaken for output: they are directories, the pair is only ever
``PREFIX.bin``/``PREFIX.idx``, and its files appear only by rename at the end.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from megatron_dscoder.errors import UserError
from megatron_dscoder.preprocess.cluster.layout import PARTIAL, WORK_LAYOUT, atomic_write
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.stages.base import WorkerContext

logger = logging.getLogger(__name__)
OWNER = ".owner"
_GRACE_SECONDS = 60.0


@dataclass
class WorkDir:
    """A work directory and the open, locked ``.owner`` file that marks its run alive."""

    path: str
    _fd: int
    kept: bool = False

    @classmethod
    def keep(cls, path: str, fingerprint: dict) -> WorkDir:
        """Open (or make) the named work directory of a resumable run."""
        os.makedirs(path, exist_ok=True)
        fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkDirError(f"--work-dir {path}: another run is using it") from None
        except OSError:
            pass  # no flock on this file system
        stamp = os.path.join(path, "run.json")
        wanted = json.dumps(fingerprint, sort_keys=True, default=str)
        if os.path.exists(stamp):
            with open(stamp) as f:
                if f.read() != wanted:
                    os.close(fd)
                    raise WorkDirError(
                        f"--work-dir {path} holds a run with other options (or of another "
                        "version); use a new directory"
                    )
        else:
            atomic_write(stamp, lambda f: f.write(wanted), mode="w")
        return cls(path, fd, kept=True)

    @classmethod
    def create(cls, root: str, base: str) -> WorkDir:
        """Sweep abandoned ``{base}.work-*`` under ``root``, then make and lock a new one."""
        sweep_abandoned(root, base)
        path = tempfile.mkdtemp(prefix=f"{base}.work-", dir=root)
        staged = os.path.join(path, f"{OWNER}.new")
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # no flock here: the directory is still removed at the end of this run
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.rename(staged, os.path.join(path, OWNER))  # appears already locked
        return cls(path, fd)

    def sweep_temporaries(self) -> int:
        """Remove what killed task attempts left in a kept directory (``*.tmp-*`` scratch
        directories, ``*.partial`` files); call only when no task of the run is in flight.
        Returns how many were removed."""
        removed = 0
        for top, dirs, files in os.walk(self.path):
            for name in [d for d in dirs if ".tmp-" in d]:
                shutil.rmtree(os.path.join(top, name), ignore_errors=True)
                dirs.remove(name)
                removed += 1
            for name in files:
                if name.endswith(PARTIAL):
                    os.unlink(os.path.join(top, name))
                    removed += 1
        return removed

    def remove(self) -> None:
        """Delete the directory (unless kept), then drop the lock."""
        if not self.kept:
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)


class WorkDirError(UserError, ValueError):
    """A ``--work-dir`` that cannot be used (in use, or made by a run with other options)."""


def sweep_abandoned(root: str, base: str) -> list[str]:
    """Remove the ``{base}.work-*`` directories of dead runs under ``root``; returns them."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith(f"{base}.work-") or not os.path.isdir(path):
            continue
        if _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.info("removed the work directory of a dead run: %s", path)
    return removed


def _abandoned(path: str) -> bool:
    try:
        fd = os.open(os.path.join(path, OWNER), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            return time.time() - os.stat(path).st_mtime > _GRACE_SECONDS
        except FileNotFoundError:
            return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its run is alive (or flock is unsupported: keep it)
    finally:
        os.close(fd)
    return True


#: Options that do not change the output (a rerun may change them with the same --work-dir).
_FREE_OPTIONS = (
    "workers",
    "engine",
    "ray_address",
    "progress",
    "stats_json",
    "report",
    "work_dir",
    "keep_shards",
    "output_shard_mb",
    "sample_hooks",
)


def fingerprint(config: PreprocessConfig, ctx: WorkerContext) -> dict[str, Any]:
    """The options that decide a work directory's contents (``run.json`` of ``--work-dir``)."""
    options = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _FREE_OPTIONS
    }
    return {
        "layout": WORK_LAYOUT,
        "options": options,
        "buckets": ctx.buckets,
        "dtype": ctx.dtype,
        "partition_bytes": config.partition_bytes,
        "repos_per_ref": config.repos_per_ref,
    }
