"""The benchmarks' smoke runs, started in the background when the suite begins.

Each smoke (``--scale smoke`` of an ablation or of the reference-parity benchmark) is a chain of
training processes that mostly waits on process start-up, while the rest of the suite leaves
about a third of two cores idle. So the root ``conftest.py`` starts the smokes whose tests were
collected as soon as collection ends, one after another at the lowest CPU priority (``nice 19``:
they take only what the other tests leave), and moves those tests to the end of the run;
:func:`result` then waits for the smoke. A smoke test run on its own runs its smoke in the
foreground.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.launch import REPO

SMOKES = {  # test file: the benchmark and its flags (``--scale smoke --out DIR`` are added)
    "tests/benchmarks/test_fim_ablation.py": ["fim_ablation.py"],
    "tests/benchmarks/test_repo_ablation.py": ["repo_ablation.py"],
    "tests/benchmarks/test_long_context_eval.py": ["long_context_eval.py"],
    "tests/benchmarks/test_reference_parity.py": ["reference_parity.py"],
}
TIMEOUT = 900


@dataclass
class Smoke:
    out: Path
    log: Path
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None


_started: dict[str, Smoke] = {}
_running: list[subprocess.Popen] = []
_root: list[str] = []


def _command(test_file: str, out: Path) -> list[str]:
    script, *args = SMOKES[test_file]
    return [sys.executable, f"benchmarks/{script}", "--scale", "smoke", *args, "--out", str(out)]


def _run_one_after_another(order: list[str]) -> None:
    for test_file in order:  # one smoke process at a time: the least taken from the others
        smoke = _started[test_file]
        try:
            with open(smoke.log, "w") as sink:
                proc = subprocess.Popen(
                    _command(test_file, smoke.out),
                    cwd=REPO,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    preexec_fn=lambda: os.nice(19),
                )
            _running.append(proc)
            smoke.status = proc.wait(timeout=TIMEOUT)
        except Exception as err:
            smoke.log.write_text(f"{type(err).__name__}: {err}")
            smoke.status = -1
        finally:
            smoke.done.set()


def start(test_files: set[str]) -> None:
    """Start the smokes of the collected ``test_files`` (root conftest, after collection)."""
    wanted = [f for f in SMOKES if f in test_files and f not in _started]
    if not wanted:
        return
    _root.append(tempfile.mkdtemp(prefix="dscoder-smokes-"))
    for test_file in wanted:
        out = Path(_root[-1]) / Path(test_file).stem
        out.mkdir()
        _started[test_file] = Smoke(out, out.with_suffix(".log"))
    threading.Thread(target=_run_one_after_another, args=(wanted,), daemon=True).start()


def stop() -> None:
    """Kill what is still running (an interrupted suite) and remove the outputs."""
    for proc in _running:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _running.clear()
    _started.clear()
    for root in _root:
        shutil.rmtree(root, ignore_errors=True)
    _root.clear()


def result(test_file: str, tmp_path: Path) -> tuple[int, str, Path]:
    """(exit status, output, --out directory) of ``test_file``'s smoke: the background run's
    if the suite started one, otherwise a run here in ``tmp_path``."""
    test_file = str(Path(test_file).resolve().relative_to(REPO))
    smoke = _started.get(test_file)
    if smoke is None:
        proc = subprocess.run(
            _command(test_file, tmp_path),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        return proc.returncode, proc.stdout + proc.stderr, tmp_path
    assert smoke.done.wait(timeout=4 * TIMEOUT), f"{test_file}: its smoke never finished"
    return smoke.status, smoke.log.read_text(), smoke.out
