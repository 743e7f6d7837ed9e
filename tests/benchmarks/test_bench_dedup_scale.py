"""``benchmarks/bench_dedup_scale.py`` as a smoke run: the same samples dropped whether each band
is merged in one key range or cut into several through scratch files, and by one or several
verification tasks."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.launch import REPO


def bench(*flags: str) -> str:
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_dedup_scale.py", "--samples", "6000", "--tasks", "5",
         "--workers", "1", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_key_ranges_and_verification_tasks_do_not_change_what_is_dropped() -> None:
    whole, cut = bench(), bench("--group-mb", "0.02")
    ranges = [int(re.search(r"(\d+) key ranges per band, (\d+) verif", out).group(1))
              for out in (whole, cut)]  # fmt: skip
    assert ranges[0] == 1 and ranges[1] > 1
    assert int(re.search(r"(\d+) verification tasks", cut).group(1)) > 1
    counts = [re.search(r"candidate pairs .*dropped [\d,]+", out).group(0) for out in (whole, cut)]
    assert counts[0] == counts[1]
    dropped = int(re.search(r"dropped ([\d,]+)", whole).group(1).replace(",", ""))
    assert dropped > 6000 * 0.2 * 0.8, whole  # most of the planted copies are found
