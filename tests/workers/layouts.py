"""Run several pretraining layouts in one torchrun launch (one torch import per rank).

    torchrun --nproc-per-node 2 tests/workers/layouts.py OUT_DIR NAME "FLAGS" [NAME "FLAGS" ...]

Each layout trains from scratch with its flags plus ``--metrics-jsonl OUT_DIR/NAME.jsonl``;
megatron-core's groups are rebuilt between layouts, the default process group is kept.
"""

import shlex
import sys

from megatron_dscoder.training import train as pretrain


def main() -> None:
    out_dir, pairs = sys.argv[1], sys.argv[2:]
    for name, flags in zip(pairs[::2], pairs[1::2], strict=True):
        argv = shlex.split(flags) + ["--metrics-jsonl", f"{out_dir}/{name}.jsonl"]
        pretrain.main(argv, keep_process_group=True)


if __name__ == "__main__":
    main()
