"""The sandbox's clean parent: confine, start one Python program, collect it, kill what is left.

Run only by :mod:`.sandbox` as ``python -I -S -B sandbox_init.py CONFIG_JSON`` (standard library
only, empty environment), either as PID 1 of fresh PID/mount/net/IPC/UTS namespaces made by
``unshare`` or, without namespaces, as a plain subreaper. Steps:

1. with namespaces: hide the home directories (an empty tmpfs over each, the Python installation
   bound back inside), remount every mount read-only, mount a size-limited tmpfs as the
   program's working directory;
2. fork the program: its own session, stdin ``/dev/null``, stdout+stderr into an anonymous
   memory file (so no pipe can be held open by a descendant), every other descriptor closed,
   rlimits, no new privileges, then a different uid (``uid``: root's case) or a nested user
   namespace where it is uid 1000 without capabilities (``nest_user``: the unprivileged case);
   exec ``python -I -S -B program.py`` with a minimal environment;
3. wait until it exits or the wall-clock ``timeout`` passes, reaping every orphan meanwhile;
4. kill everything that is left: ``kill(-1)`` from PID 1 (the namespace), from the program's
   uid (a uid of its own), or each descendant (subreaper) until none remains;
5. print one JSON status line, then the last ``max_output`` bytes the program wrote.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 36, 38
CLONE_NEWUSER = 0x10000000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {target}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, its per-mount flags) from /proc/self/mountinfo, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = sum(_OPTION_FLAGS.get(o, 0) for o in fields[5].split(","))
            out.append((point, flags))
    return sorted(out, key=lambda m: m[0].count("/"))


def confine_filesystem(config: dict) -> None:
    """Hide home directories, make every mount read-only, give the program a small tmpfs."""
    _mount(None, "/", None, MS_REC | 0x40000)  # MS_PRIVATE: nothing propagates out
    keep = [os.open(path, os.O_PATH) for path in config["keep"]]
    for hidden in config["hide"]:
        _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        for path, fd in zip(config["keep"], keep, strict=True):
            if path.startswith(hidden.rstrip("/") + "/"):
                os.makedirs(path, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    for point, flags in _mounts():
        if point == "/proc" or point.startswith("/proc/"):
            continue  # this namespace's own /proc (uid_map is written through it)
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:
            if point == "/":
                raise  # the root must be read-only; others (e.g. hidden under mounts) best effort
    data = f"size={config['work_bytes']},mode=700,uid={config['uid'] or 0},gid={config['uid'] or 0}"
    _mount("tmpfs", config["work"], "tmpfs", MS_NOSUID | MS_NODEV, data)


def _nest_user_namespace() -> None:
    """A user namespace where this process is uid/gid 1000: no capabilities, locked mounts."""
    outer_uid, outer_gid = os.getuid(), os.getgid()
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"1000 {outer_uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"1000 {outer_gid} 1")
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)


def start_program(config: dict, output: int) -> int:
    """Fork and exec the program (see the module doc); returns its pid.

    A setup step that fails is reported through a close-on-exec pipe and raised here: the
    program never runs with less confinement than asked for.
    """
    import resource

    report, failure = os.pipe()  # both close-on-exec: EOF means the exec happened
    pid = os.fork()
    if pid:
        os.close(failure)
        with os.fdopen(report, "rb") as f:
            message = f.read()
        if message:
            raise RuntimeError(message.decode(errors="replace"))
        return pid
    try:
        os.close(report)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, failure)
        os.closerange(failure + 1, 1 << 16)
        os.chdir(config["work"])
        for name, value in config["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        if config["uid"]:
            os.setgroups([])
            os.setresgid(config["uid"], config["uid"], config["uid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
        elif config["nest_user"]:
            _nest_user_namespace()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": config["work"],
            "TMPDIR": config["work"],
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0",
        }
        argv = [config["python"], "-I", "-S", "-B", config["program"]]
        os.execve(config["python"], argv, env)
    except BaseException as err:
        os.write(failure, f"sandbox setup failed: {err}".encode())
    os._exit(97)


def _pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def _children_of(parent: int) -> list[int]:
    out = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _kill_all() -> None:
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left to kill


def kill_everything(config: dict) -> None:
    """Kill every process the program left (see the module doc), then reap them."""
    if os.getpid() == 1 or config["uid"]:
        for _ in range(3):  # kill(-1) may miss a process forked while it runs: repeat
            if os.getpid() == 1:
                _kill_all()
            elif os.fork() == 0:
                os.setresuid(config["uid"], config["uid"], config["uid"])
                _kill_all()  # every process of the program's own uid, this one too
                os._exit(0)
            time.sleep(0.001)
            _reap()
        return
    for _ in range(1000):  # a subreaper: orphans come back to us until none is left
        children = _children_of(os.getpid())
        if not children:
            break
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()


def main() -> int:
    config = json.loads(sys.argv[1])
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")  # /proc/1/* closed to the program
    if config["namespaces"]:
        confine_filesystem(config)
    else:
        _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    output = os.memfd_create("output", 0)
    program = start_program(config, output)
    deadline = time.monotonic() + config["timeout"]
    status, code = "timed out", None
    while time.monotonic() < deadline:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == program:
            code = os.waitstatus_to_exitcode(wait_status)
            status = "passed" if code == 0 else "failed"
            break
        if pid == 0:
            time.sleep(0.005)
    kill_everything(config)
    size = os.lseek(output, 0, os.SEEK_END)
    tail = os.pread(output, config["max_output"], max(0, size - config["max_output"]))
    sys.stdout.buffer.write(json.dumps({"status": status, "returncode": code}).encode() + b"\n")
    sys.stdout.buffer.write(tail)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
