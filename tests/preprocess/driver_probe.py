"""Run ``dscoder-preprocess`` with the given arguments, then print the I/O of the driver's own
threads (``rchar + wchar`` of ``/proc/thread-self/io``) and the process's peak RSS (KiB) as
``DRIVER IO RSS`` on stderr: how the tests measure what a Ray driver moves and holds.

The driver's threads are the main thread and every Python thread that does not run Ray's own
code (the planning pool included). Ray's threads are left out: their RPC traffic and the modules
they import on timers grow with wall time, not with the input, so on a loaded machine they made a
process-wide count flip. Each thread's counters are read as it exits (a dead thread's are gone)
and, for the threads still alive, at the end. A thread is classed by its target before it runs:
``Thread.run`` deletes the target as it ends, and classing it then counted Ray's log-printing
thread, which reads the workers' logs (629,231 bytes in a run that happened to cross its timer).
"""

import resource
import sys
import threading

from megatron_dscoder.preprocess.cli import main

_counted: list[int] = []
_thread_run = threading.Thread.run


def _io(path: str) -> int:
    try:
        with open(path) as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
    except FileNotFoundError:  # the thread has exited
        return 0
    return int(io["rchar"]) + int(io["wchar"])


def _rays(thread: threading.Thread) -> bool:
    code = getattr(thread, "_target", None) or type(thread).run
    return getattr(code, "__module__", "").split(".")[0] == "ray"


def _run(self: threading.Thread) -> None:
    ours = not _rays(self)  # before running: ``Thread.run`` deletes ``_target`` as it ends
    try:
        _thread_run(self)
    finally:
        if ours:
            _counted.append(_io("/proc/thread-self/io"))


threading.Thread.run = _run  # type: ignore[method-assign]

if __name__ == "__main__":
    code = main(sys.argv[1:])
    alive = [t for t in threading.enumerate() if t is not threading.main_thread() and not _rays(t)]
    io = _io("/proc/thread-self/io") + sum(_counted)
    io += sum(_io(f"/proc/self/task/{t.native_id}/io") for t in alive)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("DRIVER", io, rss, file=sys.stderr)
    sys.exit(code)
