"""Run many ``tools/convert_checkpoint.py`` invocations in one interpreter (one torch import).

    python tests/convert/workers/convert_cases.py JOBS.json RESULTS.json

The process imports torch, megatron-core and transformers, then waits for ``JOBS.json`` (written
atomically by the caller) to appear: a list of ``{"name", "argv", "measure"}``, where an entry
with ``"module"`` runs that module's ``main(argv)`` (or its ``"entry"``) instead
(``megatron_dscoder.pretrain``). Each
job's exit status, printed output and wall time go to ``RESULTS.json``; with ``measure``, also the
job's own peak resident memory (Linux: ``/proc/self/clear_refs`` resets the high-water mark).
"""

import contextlib
import importlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

from megatron_dscoder.convert import cli as convert_checkpoint


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def run(job: dict) -> dict:
    out, err = io.StringIO(), io.StringIO()
    result: dict = {}
    if job.get("measure"):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        result["rss_before_mb"] = _status_kb("VmRSS") / 1024
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if "module" in job:  # another entry point sharing this interpreter (pretrain)
                entry = getattr(importlib.import_module(job["module"]), job.get("entry", "main"))
                rc = entry(job["argv"])
            else:
                rc = convert_checkpoint.main(job["argv"])
        except SystemExit as exc:  # argparse errors
            rc = exc.code
        except Exception:
            rc = "exception"
            err.write(traceback.format_exc())
    result.update(
        rc=rc, stdout=out.getvalue(), stderr=err.getvalue(), seconds=time.perf_counter() - start
    )
    if job.get("measure"):
        result["peak_mb"] = _status_kb("VmHWM") / 1024
    return result


def main() -> None:
    # Import everything first, then wait for the job list: the caller starts this process
    # while it is still preparing the inputs, so the imports overlap that work.
    import transformers  # noqa: F401

    from megatron_dscoder.convert import logits, megatron, pipeline  # noqa: F401

    jobs_file = Path(sys.argv[1])
    deadline = time.monotonic() + 600
    while not jobs_file.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{jobs_file} never appeared")
        time.sleep(0.2)
    jobs = json.loads(jobs_file.read_text())
    results = {job["name"]: run(job) for job in jobs}
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
