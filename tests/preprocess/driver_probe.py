"""Run ``dscoder-preprocess`` with the given arguments, then print this process's own I/O
(``rchar + wchar`` of ``/proc/self/io``) and peak RSS (KiB) as ``DRIVER IO RSS`` on stderr:
how the tests measure what a Ray driver moves and holds."""

import resource
import sys

from megatron_dscoder.preprocess.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    with open("/proc/self/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("DRIVER", int(io["rchar"]) + int(io["wchar"]), rss, file=sys.stderr)
    sys.exit(code)
