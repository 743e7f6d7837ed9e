r"""Train one iteration per layout and keep every parameter from before and after the update.

    torchrun --nproc-per-node N tests/workers/first_update.py \
        OUT_DIR NAME "FLAGS" [NAME "FLAGS" ...]

``training.build.build_optimizer`` is wrapped to copy the model's parameters when the optimizer is
built (initialised, not yet updated); once the run ends, rank 0 saves ``OUT_DIR/NAME.pt``:
``{parameter name: (before, after)}`` for its model chunk, and the optimizer's parameter groups
(their ``lr``, ``weight_decay``, ``wd_mult`` and the names of their parameters).
"""

import shlex
import sys

import torch

from megatron_dscoder.training import build
from megatron_dscoder.training import train as pretrain

BUILD_OPTIMIZER = build.build_optimizer
captured: dict = {}


def build_and_capture(run, model):
    optimizer = BUILD_OPTIMIZER(run, model)
    captured["model"] = model
    captured["before"] = {n: p.detach().clone() for n, p in model[0].named_parameters()}
    captured["optimizer"] = optimizer
    return optimizer


def groups(optimizer, model) -> list[dict]:
    names = {id(p): n for n, p in model[0].named_parameters()}
    return [
        {
            "lr": g["lr"],
            "weight_decay": g["weight_decay"],
            "wd_mult": g.get("wd_mult", 1.0),
            "params": sorted(names[id(p)] for p in g["params"] if id(p) in names),
        }
        for g in optimizer.param_groups
    ]


def main() -> None:
    build.build_optimizer = build_and_capture
    out_dir, pairs = sys.argv[1], sys.argv[2:]
    for name, flags in zip(pairs[::2], pairs[1::2], strict=True):
        pretrain.main(shlex.split(flags), keep_process_group=True)
        model = captured["model"]
        after = dict(model[0].named_parameters())
        record = {
            "params": {n: (b, after[n].detach().clone()) for n, b in captured["before"].items()},
            # The plain optimizer's groups hold the model's parameters; the distributed one's
            # hold shards, so names are recorded only where they match.
            "groups": groups(captured["optimizer"], model),
        }
        if torch.distributed.get_rank() == 0:
            torch.save(record, f"{out_dir}/{name}.pt")


if __name__ == "__main__":
    main()
