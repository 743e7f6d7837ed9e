"""The driver probe counts the I/O of the driver's own threads and leaves Ray's out, however
long a thread lives: a thread is classed by its target before it runs (``Thread.run`` deletes
the target as it ends; classing it afterwards counted Ray's log-printing thread, 629,231 bytes
in a run that crossed its timer, and made the driver-I/O test fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parent / "driver_probe.py"

SCRIPT = """
import json, runpy, sys, threading
probe = runpy.run_path(sys.argv[1], run_name="driver_probe")
def read(path):
    with open(path, "rb") as f:
        while f.read(1 << 16):
            pass
def rays(path):
    read(path)
rays.__module__ = "ray._private.worker"
for target, size in ((read, 1 << 20), (rays, 1 << 22)):
    path = f"{sys.argv[2]}/{size}"
    open(path, "wb").write(bytes(size))
    thread = threading.Thread(target=target, args=(path,))
    thread.start()
    thread.join()
print(json.dumps(probe["_counted"]))
"""


def test_probe_counts_the_drivers_threads_and_not_rays(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(PROBE), str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    (counted,) = json.loads(done.stdout)  # one thread counted: the driver's, not Ray's
    assert 1 << 20 <= counted < (1 << 20) + (1 << 16), counted
