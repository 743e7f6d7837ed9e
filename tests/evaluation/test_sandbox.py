"""The HumanEval sandbox holds against hostile programs (each escape of the issue, and more).

Run at the strongest isolation this machine offers (``namespaces`` as root with ``unshare``) and,
where it works, also at ``user-namespaces`` (the unprivileged path). At the ``process`` level
(no namespaces, not root) only the process-lifetime tests apply: the rest is documented as not
contained there, and those tests are skipped with that reason.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import pytest

from megatron_dscoder.evaluation import sandbox
from megatron_dscoder.evaluation.sandbox import Limits, run_at


def _levels() -> list[str]:
    levels = [sandbox.isolation()]
    probe = run_at("user-namespaces", "print('ok')\n", Limits(timeout=20))
    if "user-namespaces" not in levels and probe.passed:
        levels.append("user-namespaces")
    return levels


LEVELS = _levels()
CONFINED = [level for level in LEVELS if level != "process"]
needs_confinement = pytest.mark.skipif(
    not CONFINED, reason="process level: file system and /proc are not contained (documented)"
)


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


@needs_confinement
@pytest.mark.parametrize("level", CONFINED)
def test_secrets_of_the_harness_are_out_of_reach(level: str, monkeypatch) -> None:
    secret = secrets.token_hex(12)
    monkeypatch.setenv("HARNESS_API_KEY", secret)
    program = """
import os
for pid in os.listdir('/proc'):
    for name in ('environ', 'cmdline'):
        try:
            print(pid, name, open(f'/proc/{pid}/{name}', 'rb').read())
        except OSError as err:
            print(pid, name, err)
print('parent', os.getppid(), sorted(os.environ))
"""
    result = run_at(level, program, Limits(timeout=10, max_output=1 << 16))
    assert result.passed, result.output
    assert secret not in result.output and "HARNESS_API_KEY" not in result.output
    assert f"{os.getpid()} environ" not in result.output  # the harness is not even visible


@needs_confinement
@pytest.mark.parametrize("level", CONFINED)
def test_files_outside_cannot_be_written_deleted_or_reached_by_a_shell(
    level: str, tmp_path: Path
) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("data")
    attacks = {
        "write": f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
        "delete": f"import posix\nposix.unlink({str(victim)!r})",
        "rmtree": f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        "shell": f"import posix\nposix.system('echo x > {tmp_path}/sh.txt; rm -f {victim}')\n"
        "raise SystemExit(1)  # the shell ran; its effects are checked below",
        "remount": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.mount(None, b'/', None, 32 | 4096, None) != 0\nopen('/etc/owned', 'w')",
        "nested-userns": "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "uid, gid = os.getuid(), os.getgid()\nassert libc.unshare(0x10000000 | 0x20000) == 0\n"
        "open('/proc/self/setgroups', 'w').write('deny')\n"
        "open('/proc/self/uid_map', 'w').write(f'0 {uid} 1')\n"
        "open('/proc/self/gid_map', 'w').write(f'0 {gid} 1')\n"
        "libc.mount(None, b'/', None, 32 | 4096, None)\n"  # remount rw: refused (locked)
        f"open({str(tmp_path / 'userns.txt')!r}, 'w')",
    }
    for name, program in attacks.items():
        result = run_at(level, program + "\n", Limits(timeout=10))
        assert result.status == "failed", (name, result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert victim.read_text() == "data" and not Path("/etc/owned").exists()
    home = run_at(
        level,
        f"print(sorted(__import__('os').listdir({str(Path.home())!r})))\n",
        Limits(timeout=10),
    )
    # Only the Python installation is mounted back into the hidden home, when it lives there.
    python = Path(sys.base_prefix).resolve()
    shown = [python.relative_to(Path.home()).parts[0]] if python.is_relative_to(Path.home()) else []
    assert home.passed and home.output.strip() == str(shown), home.output


@pytest.mark.parametrize("level", sorted({*LEVELS, "process"}))
def test_a_setsid_grandchild_holding_stdout_dies_at_the_timeout(level: str) -> None:
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6) + 1}"
    program = f"""
import os, posix, time
if posix.fork() == 0:
    os.setsid()
    if posix.fork() == 0:
        posix.execv('/bin/sleep', ['sleep', '{marker}'])
    posix._exit(0)
time.sleep(60)
"""
    start = time.perf_counter()
    result = run_at(level, program, Limits(timeout=2))
    elapsed = time.perf_counter() - start
    assert result.status == "timed out" and elapsed < 2 + 4, elapsed
    time.sleep(0.2)
    assert not _processes_with(marker), "the escaped grandchild is still running"
    quick = run_at(level, program.replace("time.sleep(60)", "print('done')"), Limits(timeout=5))
    assert quick.passed and "done" in quick.output  # returns at once, not when the child ends
    time.sleep(0.2)
    assert not _processes_with(marker)


@pytest.mark.parametrize("level", LEVELS)
def test_a_fork_bomb_is_bounded_and_cleaned_up(level: str) -> None:
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6) + 7}"
    program = f"""
import posix
while True:
    try:
        if posix.fork() == 0:
            posix.execv('/bin/sleep', ['sleep', '{marker}'])
    except OSError:
        pass
"""
    start = time.perf_counter()
    result = run_at(level, program, Limits(timeout=2, processes=32))
    assert result.status == "timed out" and time.perf_counter() - start < 2 + 4
    time.sleep(0.2)
    assert not _processes_with(marker)


@needs_confinement
@pytest.mark.parametrize("level", CONFINED)
def test_no_network_bounded_output_disk_and_memory(level: str) -> None:
    limits = Limits(timeout=10, work_mb=8, file_mb=4, memory_mb=512)
    cases = {
        "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)": "Network is",
        "f = open('big', 'wb')\nfor _ in range(64):\n    f.write(b'x' * (1 << 20))": "too large",
        "for i in range(4):\n    open(f'f{i}', 'wb').write(b'x' * (3 << 20))": "No space left",
        "x = bytearray(2 << 30)": "MemoryError",
    }
    for program, expected in cases.items():
        result = run_at(level, program + "\n", limits)
        assert result.status == "failed" and expected in result.output, (program, result)
    spam = run_at(level, "import sys\nsys.stdout.write('x' * (64 << 20))\n", limits)
    assert spam.status == "failed" and len(spam.output) == limits.max_output


def test_the_sandbox_reports_its_own_failure_instead_of_a_score() -> None:
    broken = Limits(timeout=5, open_files=1)  # python cannot even start with one descriptor
    result = run_at(sandbox.isolation(), "print('never')\n", broken)
    assert result.status in ("error", "failed") and "never" not in result.output
