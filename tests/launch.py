"""Helpers for tests that launch real multi-process runs (torchrun over gloo on CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent / "workers"


def free_port() -> int:
    """A TCP port nobody listens on right now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(nproc: int, *target: str, preloaded: bool = False) -> list[str]:
    """``torchrun`` (as ``python -m torch.distributed.run``) on ``nproc`` local ranks, a
    free port; ``preloaded``: torchrun started with the training stack imported, its ranks
    forked from it (``workers/preloaded_torchrun.py``; ``target`` is then a script)."""
    launcher = [str(WORKERS / "preloaded_torchrun.py"), "--run-path", "--start-method", "fork"]
    return [
        sys.executable,
        *(launcher if preloaded else ["-m", "torch.distributed.run"]),
        f"--nproc-per-node={nproc}",
        f"--master-port={free_port()}",
        *target,
    ]


def torchrun(
    nproc: int,
    script: str | Path,
    *args: str,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``script`` on ``nproc`` local ranks, forked from a torchrun that has imported the
    training stack (``torchrun_cmd``); output is captured and shown on failure."""
    cmd = torchrun_cmd(nproc, str(script), *args, preloaded=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None unsets
    proc = subprocess.run(
        cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def python_module(
    module: str,
    *args: str,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` in a fresh interpreter from the repository root."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a metrics JSONL file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def torchrun_popen(nproc: int, args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``torchrun -m megatron_dscoder.pretrain ARGS`` in its own process group."""
    cmd = torchrun_cmd(nproc, "-m", "megatron_dscoder.pretrain", *args)
    log = open(log_path, "w")
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _logged(metrics: Path) -> list[int]:
    return (
        [r["iteration"] for r in read_jsonl(metrics) if "lm_loss" in r] if metrics.exists() else []
    )


def _wait_logged(
    proc: subprocess.Popen, metrics: Path, iteration: int, timeout: float
) -> list[int]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = _logged(metrics)
        if logged and logged[-1] >= iteration:
            return logged
        if proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before iteration {iteration}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"iteration {iteration} not reached in {timeout} s")


def kill_when(proc: subprocess.Popen, metrics: Path, iteration: int, timeout: float = 300) -> int:
    """SIGKILL torchrun alone once ``metrics`` logs ``iteration``; its workers must follow.

    torchrun starts the workers in sessions of their own, so nothing but the workers' own
    parent-death signal (megatron_dscoder.lifeline) takes them down. Asserts that no
    worker (or process a worker forked) is alive 10 s later and that nothing more was logged
    than the iteration in flight; returns the last iteration logged.
    """
    import time

    import psutil

    logged = _wait_logged(proc, metrics, iteration, timeout)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not alive, f"workers outlived torchrun by 10 s: {[p.pid for p in alive]}"
    time.sleep(0.5)
    after = _logged(metrics)
    assert after[: len(logged)] == logged and len(after) <= len(logged) + 1, (
        f"run kept training after SIGKILL: {after}"
    )
    return after[-1]


def signal_when(
    proc: subprocess.Popen, metrics: Path, iteration: int, sig: int, timeout: float = 300
) -> tuple[int, int]:
    """Send ``sig`` to torchrun's workers once ``metrics`` logs ``iteration`` (as a scheduler
    signals a job's processes); returns (last iteration logged then, torchrun's exit status)."""
    import psutil

    logged = _wait_logged(proc, metrics, iteration, timeout)
    for worker in psutil.Process(proc.pid).children():
        worker.send_signal(sig)
    return logged[-1], proc.wait(timeout=timeout)
