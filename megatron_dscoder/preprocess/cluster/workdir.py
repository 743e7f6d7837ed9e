"""The run's work directory ``PREFIX.work-XXXXXXXX``: owned while in use, swept when abandoned.

A run keeps its shards, spill files and band records in a fresh directory next to the output
(or under ``--tmp-dir``) and removes it at the end, also on errors. A SIGKILLed run cannot, so
the directory says whether its owner is alive: the driver holds ``flock`` on ``.owner`` inside
it for the whole run (the kernel drops the lock when the driver dies, whatever kills it). Such a
directory is marked temporary (``.temporary``), and the next run with the same prefix and work
root removes every marked ``PREFIX.work-*`` whose lock it can take, i.e. whose run is dead, and
leaves the others (a concurrent run) alone. Only marked directories are swept: a kept one is
never, whatever its name. Where the file system refuses ``flock`` nothing is swept.

``--work-dir DIR`` names the directory instead (:meth:`WorkDir.keep`): it is created if
missing (an existing one must be empty or a kept work directory), locked the same way (a
second live run on it is refused), stamped with the run's fingerprint (``run.json``: the
options that change the output, each input's size and modification time, the tokenizer's file
digests) so that a rerun with other options or changed inputs is refused, naming what changed,
instead of mixing results, and never removed: a rerun skips the tasks whose completion markers
it finds and whose files still match their checksums (:mod:`.markers`).

The names can never be mistaken for output: they are directories, the pair is only ever
``PREFIX.bin``/``PREFIX.idx``, and its files appear only by rename at the end.
"""

from __future__ import annotations

import contextlib
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
from megatron_dscoder.preprocess.cluster import integrity
from megatron_dscoder.preprocess.cluster.layout import PARTIAL, WORK_LAYOUT, atomic_write
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.stages.base import WorkerContext

logger = logging.getLogger(__name__)
OWNER = ".owner"
#: Marks a directory made by :meth:`WorkDir.create`: only these are ever swept.
TEMPORARY = ".temporary"
#: The fingerprint of a kept directory.
STAMP = "run.json"
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
        _check_keepable(path)
        os.makedirs(path, exist_ok=True)
        fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkDirError(f"--work-dir {path}: another run is using it") from None
        except OSError:
            pass  # no flock on this file system
        stamp = os.path.join(path, STAMP)
        try:
            if os.path.exists(stamp):
                _check_stamp(path, _read_stamp(stamp), fingerprint)
            else:
                wanted = json.dumps(fingerprint, sort_keys=True, default=str)
                atomic_write(stamp, lambda f: f.write(wanted), mode="w")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, kept=True)

    @classmethod
    def create(cls, root: str, base: str) -> WorkDir:
        """Sweep abandoned ``{base}.work-*`` under ``root``, then make and lock a new one."""
        sweep_abandoned(root, base)
        path = tempfile.mkdtemp(prefix=f"{base}.work-", dir=root)
        with open(os.path.join(path, TEMPORARY), "w") as f:
            f.write("the work directory of one run, removed when it ends or by a later run\n")
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
    """A ``--work-dir`` that cannot be used (in use, or made by a run with other options or
    from other inputs)."""


def _check_keepable(path: str) -> None:
    """Refuse as ``--work-dir`` a directory that is not one (its ``*.partial`` files and
    ``*.tmp-*`` directories would be swept) or another run's temporary one (stamped with no
    options: its markers could be of any)."""
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise WorkDirError(f"--work-dir {path}: not a directory") from None
    if TEMPORARY in names:
        raise WorkDirError(
            f"--work-dir {path}: the temporary work directory of another run; use a new directory"
        )
    stamping = {n for n in names if n.startswith(f"{STAMP}.") and n.endswith(PARTIAL)}
    if STAMP not in names and names - stamping - {OWNER}:  # a run killed before its stamp
        raise WorkDirError(
            f"--work-dir {path}: not empty and not a work directory (no {STAMP}); give a new "
            "or empty directory"
        )


def _read_stamp(stamp: str) -> dict[str, Any]:
    try:
        with open(stamp, "rb") as f:
            stored = json.loads(f.read())
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        raise WorkDirError(
            f"{stamp}: unreadable; the work directory cannot be checked, use a new --work-dir"
        )
    return stored


def _check_stamp(path: str, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse a kept directory made by another version, with other options or from inputs (or
    a tokenizer) that changed since, naming what differs."""
    if stored.get("layout") != wanted.get("layout"):
        raise WorkDirError(
            f"--work-dir {path} was made by another version of this tool; use a new directory"
        )
    options = [{k: v for k, v in d.items() if k != "state"} for d in (stored, wanted)]
    if len({json.dumps(d, sort_keys=True, default=str) for d in options}) > 1:
        raise WorkDirError(f"--work-dir {path} holds a run with other options; use a new directory")
    changed = integrity.describe_change(stored.get("state", {}), wanted.get("state", {}))
    if changed is not None:
        raise WorkDirError(
            f"--work-dir {path}: {changed} since its work was done; use a new --work-dir "
            "(or restore it)"
        )


def sweep_abandoned(root: str, base: str) -> list[str]:
    """Remove the temporary ``{base}.work-*`` directories of dead runs under ``root``; returns
    them. A kept one (``--work-dir``, even if named so) is never touched."""
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
    """A temporary directory whose run is dead: marked :data:`TEMPORARY` and its lock free (or
    no ``.owner`` a minute after it was made). Unmarked directories are kept ones (or empty:
    those are removed a minute after they were made, as a run killed before marking its own)."""
    try:
        old = time.time() - os.stat(path).st_mtime > _GRACE_SECONDS
    except OSError:
        return False
    if not os.path.exists(os.path.join(path, TEMPORARY)):
        with contextlib.suppress(OSError):
            if old:
                os.rmdir(path)  # only ever removes an empty directory
        return False
    try:
        fd = os.open(os.path.join(path, OWNER), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return old
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
    """What decides a work directory's contents (``run.json`` of ``--work-dir``): the options,
    and the inputs' and the tokenizer's state (:func:`.integrity.input_state`)."""
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
        "state": integrity.input_state(config.inputs, config.tokenizer_model),
    }
