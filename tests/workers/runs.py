"""Run several pretraining invocations in one process (torchrun or plain python).

    python tests/workers/runs.py RESULTS.json NAME "FLAGS" [NAME "FLAGS" ...]

Each invocation's outcome goes into RESULTS.json (rank 0 writes): ``{"NAME": {"status": "ok" |
"error" | "exit", "message": str}}``. Configuration errors exit through argparse (status 2);
runtime errors are recorded with their message, so tests can assert what a user would read.
"""

import json
import shlex
import sys

from megatron_dscoder.training import train as pretrain


def main() -> None:
    out, pairs = sys.argv[1], sys.argv[2:]
    results = {}
    for name, flags in zip(pairs[::2], pairs[1::2], strict=True):
        try:
            pretrain.main(shlex.split(flags), keep_process_group=True)
            results[name] = {"status": "ok", "message": ""}
        except SystemExit as err:
            results[name] = {"status": "exit", "message": str(err.code)}
        except Exception as err:
            results[name] = {"status": "error", "message": f"{type(err).__name__}: {err}"}
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
