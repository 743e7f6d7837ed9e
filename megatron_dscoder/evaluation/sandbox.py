"""Run an untrusted Python program (a generated HumanEval completion) and keep it contained.

:func:`run_sandboxed` starts :mod:`.sandbox_init` from a clean environment as the program's
parent; it confines and runs the program (see that module) and reports ``passed`` (exit 0),
``failed`` or ``timed out``. The strongest available isolation is probed once per process
(:func:`isolation`) and written into every result:

``namespaces``  (root, ``unshare`` works; ``user-namespaces`` unprivileged) fresh PID, mount,
                network, IPC and UTS namespaces: the program sees only its own processes (so no
                ``/proc/<pid>/environ`` of the harness), has no network, every mount is read-only
                except its own tmpfs working directory (``work_mb``), ``/root`` and ``/home``
                are empty (the Python installation is bound back); it runs as a uid of its own
                (root's case) or as uid 1000 in a nested user namespace without capabilities.
                When the program ends or times out, PID 1 of the namespace kills the rest.
``uid``         (root without namespaces) a uid of its own: it cannot signal, trace or read the
                environment of other processes, nor write files it does not own; all processes
                of that uid are killed at the end.
``process``     (neither) a clean parent, own session, a subreaper that kills every descendant
                at the end, and :data:`ACCIDENT_GUARD`. It contains accidents only: the program
                can read and write whatever the harness user can, and RLIMIT_NPROC does not
                bind root (a fork bomb then lasts until the timeout kills it).

In every mode: an environment with no variable of the harness, stdin ``/dev/null``, output
into an anonymous memory file (no pipe a descendant could hold open), rlimits on CPU time,
address space, file size, open files and processes (RLIMIT_NPROC: exact with a uid of its own),
no new privileges, and a harness-side deadline of ``timeout`` plus a few seconds whatever
happens. Not contained in any mode: reading world-readable files of the host (the code base,
``/etc``), CPU/memory use up to the limits (no cgroup). A program that exits 0 before the tests
run (e.g. ``os._exit(0)``) exits 0 here; the HumanEval harness (``humaneval.py``) counts it as
failed: a pass needs the line it prints after ``check()`` returned.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from megatron_dscoder.errors import UserError

logger = logging.getLogger(__name__)
INIT = str(Path(__file__).with_name("sandbox_init.py"))
LEVELS = ("namespaces", "user-namespaces", "uid", "process")
_GRACE_SECONDS = 10.0  # start-up and collection beyond the program's own timeout
_CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


#: Prepended at the ``process`` level only, where nothing else stops an accidental
#: ``shutil.rmtree`` of the user's files: destructive functions are removed. Any program that
#: wants to can get them back (``import posix``); it is no boundary, only a seat belt.
ACCIDENT_GUARD = """\
import os as _os, shutil as _sh, subprocess as _sp
for _m, _names in ((_os, ("system", "fork", "forkpty", "kill", "killpg", "execv", "execve",
                          "spawnv", "popen", "remove", "unlink", "rmdir", "removedirs",
                          "rename", "renames", "replace", "truncate", "chmod", "chown")),
                   (_sh, ("rmtree", "move", "chown")), (_sp, ("Popen", "run", "call",
                                                             "check_output", "getoutput"))):
    for _n in _names:
        if hasattr(_m, _n):
            setattr(_m, _n, None)
del _os, _sh, _sp, _m, _names, _n
"""


@dataclass(frozen=True)
class SandboxResult:
    status: str
    """``passed``, ``failed`` (non-zero exit), ``timed out`` or ``error`` (the sandbox broke)."""
    output: str
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxError(UserError, RuntimeError):
    """The sandbox itself failed (not the program): scores would be wrong, so stop.

    A plain exception (``SandboxError("message")``), not a dataclass: a frozen dataclass with no
    fields would refuse the message and raise ``TypeError`` instead."""


@dataclass(frozen=True)
class Limits:
    """Per-program limits (wall clock, CPU, memory, disk, processes, files, output kept)."""

    timeout: float = 10.0
    memory_mb: int = 2048
    file_mb: int = 16
    work_mb: int = 64
    processes: int = 64
    open_files: int = 256
    max_output: int = 4096

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_CPU": max(1, int(self.timeout) + 1),
            "RLIMIT_AS": self.memory_mb << 20,
            "RLIMIT_FSIZE": self.file_mb << 20,
            "RLIMIT_CORE": 0,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_NPROC": self.processes,
        }


def run_sandboxed(
    program: str, *, timeout: float = 10.0, memory_mb: int = 2048, max_output: int = 4096
) -> SandboxResult:
    """Run a Python program in the strongest available sandbox; its exit status decides."""
    limits = Limits(timeout=timeout, memory_mb=memory_mb, max_output=max_output)
    return run_at(isolation(), program, limits)


@functools.cache
def isolation() -> str:
    """The strongest level of :data:`LEVELS` that works here (probed once per process)."""
    for level in _candidate_levels():
        result = run_at(level, "print('sandbox ok')\n", Limits(timeout=20))
        if result.passed and "sandbox ok" in result.output:
            logger.info("HumanEval sandbox isolation: %s", level)
            return level
        logger.info("sandbox level %s unavailable: %s", level, result.output.strip()[-200:])
    return "process"


def _candidate_levels() -> list[str]:
    root = os.geteuid() == 0  # root may still lack capabilities (a container): probe each
    levels = ["namespaces", "user-namespaces"] if root else ["user-namespaces"]
    if not (sys.platform.startswith("linux") and shutil.which("unshare")):
        levels = []
    return [*levels, *(["uid"] if root else []), "process"]


def run_at(level: str, program: str, limits: Limits) -> SandboxResult:
    """Run ``program`` at isolation ``level`` (one of :data:`LEVELS`)."""
    namespaces = level in ("namespaces", "user-namespaces")
    privileged = level in ("namespaces", "uid")  # root: the program gets a uid of its own
    with tempfile.TemporaryDirectory(prefix="sandbox-") as tmp:
        os.chmod(tmp, 0o755)  # readable by the program's own uid; the program writes in work/
        Path(tmp, "program.py").write_text(
            ACCIDENT_GUARD + program if level == "process" else program
        )
        os.chmod(Path(tmp, "program.py"), 0o644)
        work = Path(tmp, "work")
        work.mkdir()
        uid = 1_000_000 + secrets.randbelow(1 << 30) if privileged else 0
        if uid:
            try:
                os.chown(work, uid, uid)
            except PermissionError as err:  # root without CAP_CHOWN: this level is unavailable
                return SandboxResult("error", f"sandbox setup failed: {err}", level)
        config = {
            "program": str(Path(tmp, "program.py")),
            "work": str(work),
            "uid": uid,
            "python": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
            "namespaces": namespaces,
            "nest_user": level == "user-namespaces",
            "keep": [os.path.realpath(sys.base_prefix), tmp],
            "hide": _hidden_dirs(),
            "rlimits": limits.rlimits(),
            "timeout": limits.timeout,
            "work_bytes": limits.work_mb << 20,
            "max_output": limits.max_output,
        }
        command = [config["python"], "-I", "-S", "-B", INIT, json.dumps(config)]
        if namespaces:
            command = [*_unshare(user=not privileged), *command]
        raw, killed = _run_with_deadline(command, limits.timeout + _GRACE_SECONDS)
        _remove_tree(tmp)
    return _parse(raw, killed, level)


def _unshare(user: bool) -> list[str]:
    return [
        "unshare",
        *(["--user", "--map-root-user"] if user else []),
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--mount-proc",
        "--net",
        "--ipc",
        "--uts",
    ]


def _hidden_dirs() -> list[str]:
    dirs = {"/root", "/home", os.path.expanduser("~")}
    return sorted(d for d in dirs if d not in ("/", "") and os.path.isdir(d))


def _run_with_deadline(command: list[str], seconds: float) -> tuple[bytes, bool]:
    """The command's stdout+stderr, read until EOF or the deadline (then its session is killed)."""
    proc = subprocess.Popen(
        command,
        env=_CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd="/",
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    chunks, deadline, killed = [], time.monotonic() + seconds, False
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            chunks.append(data)
    else:
        killed = True
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except ProcessLookupError:
            pass
    proc.stdout.close()
    proc.wait()
    return b"".join(chunks), killed


def _remove_tree(path: str) -> None:
    def writable_again(func, name, exc) -> None:
        os.chmod(os.path.dirname(name), 0o700)
        func(name)

    shutil.rmtree(path, onerror=writable_again)


def _parse(raw: bytes, killed: bool, level: str) -> SandboxResult:
    head, _, tail = raw.partition(b"\n")
    try:
        status = json.loads(head)["status"]
    except (ValueError, KeyError, TypeError):
        status, tail = ("timed out" if killed else "error"), raw
    return SandboxResult(status, tail.decode("utf-8", "replace"), level)


def describe() -> dict:
    """What the harness records with its scores: the isolation level and the default limits."""
    return {"isolation": isolation(), **asdict(Limits())}
