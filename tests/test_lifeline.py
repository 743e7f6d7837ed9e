"""Workers die with their launcher: the parent-death signal and the watchdog, without torch.

A stand-in launcher starts a worker (``LOCAL_RANK`` set) that ties itself to the launcher and
forks a child, as megatron-core's checkpoint writer does; SIGKILL of the launcher must take both
down. The full torchrun case is in tests/training/test_resume.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.launch import REPO

WORKER = """
import os, sys, time
from megatron_dscoder import lifeline
if sys.argv[1] == "watchdog-only":
    lifeline._arm_parent_death_signal = lambda: False
assert lifeline.tie_to_launcher(interval_s=0.2)
child = os.fork()
if child == 0:
    time.sleep(120)
    os._exit(0)
print(os.getpid(), child, flush=True)
time.sleep(120)
"""
LAUNCHER = """
import os, subprocess, sys, time
env = {**os.environ, "LOCAL_RANK": "0"}
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env,
                          start_new_session=True)  # as torchrun does
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("mode", ["pdeathsig", "watchdog-only"])
def test_worker_and_its_forked_child_die_with_the_launcher(mode):
    if mode == "pdeathsig" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER, mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    worker, child = (int(x) for x in launcher.stdout.readline().split())
    try:
        assert _alive(worker) and _alive(child)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        # Without the parent-death signal (non-Linux) a forked child is not followed.
        watched = (worker, child) if mode == "pdeathsig" else (worker,)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in watched) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [p for p in watched if _alive(p)]
        assert not survivors, f"{mode}: {survivors} outlived the launcher"
    finally:
        launcher.kill()
        for pid in (worker, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_plain_launch_is_not_tied():
    """``nohup python -m megatron_dscoder.pretrain`` must outlive its shell: no LOCAL_RANK,
    no tie."""
    code = "from megatron_dscoder import lifeline; print(lifeline.tie_to_launcher())"
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_RANK"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr
