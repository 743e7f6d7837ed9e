"""Run pretraining layouts and record, before every optimizer step, the gradient norm in float64.

    torchrun --nproc-per-node 2 tests/workers/grad_norm_check.py OUT_DIR NAME "FLAGS" [...]

Each layout runs the real CLI with ``--metrics-jsonl OUT_DIR/NAME.jsonl``; the optimizer built by
``training.build.build_optimizer`` is wrapped so that, after megatron-core has reduced the
gradients and before it computes its own norm, this worker computes the reference independently:
the float64 sum of squares of every gradient this rank owns (tensor-parallel replicas counted
once), summed in float64 over the model-parallel group. ``OUT_DIR/NAME.ref.json`` holds the list
of ``[reference, reported]`` pairs, one per iteration. Layouts without the distributed optimizer
only: with it each rank's gradient buffer is valid only on its own shard.
"""

import json
import shlex
import sys

import torch
from megatron.core import parallel_state

from megatron_dscoder.training import build
from megatron_dscoder.training import train as pretrain

BUILD_OPTIMIZER = build.build_optimizer


def float64_grad_norm(model: list[torch.nn.Module]) -> float:
    """sqrt(sum of squares) of the model's reduced gradients, accumulated in float64."""
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    total = torch.zeros((), dtype=torch.float64)
    for chunk in model:
        for param in chunk.parameters():
            grad = getattr(param, "main_grad", None)
            if grad is None or not (getattr(param, "tensor_model_parallel", False) or tp_rank == 0):
                continue
            total += grad.detach().double().square().sum()
    torch.distributed.all_reduce(total, group=parallel_state.get_model_parallel_group())
    return float(total.sqrt())


def recording_build_optimizer(pairs: list[list[float]]):
    """``build_optimizer`` whose optimizer appends ``[reference, reported]`` at every step."""

    def build_optimizer(run, model):
        optimizer = BUILD_OPTIMIZER(run, model)
        step = optimizer.step

        def checked_step():
            reference = float64_grad_norm(model)
            result = step()
            pairs.append([reference, float(result[1])])
            return result

        optimizer.step = checked_step
        return optimizer

    return build_optimizer


def main() -> None:
    out_dir, pairs = sys.argv[1], sys.argv[2:]
    for name, flags in zip(pairs[::2], pairs[1::2], strict=True):
        recorded: list[list[float]] = []
        build.build_optimizer = recording_build_optimizer(recorded)
        argv = shlex.split(flags) + ["--metrics-jsonl", f"{out_dir}/{name}.jsonl"]
        pretrain.main(argv, keep_process_group=True)
        if torch.distributed.get_rank() == 0:
            with open(f"{out_dir}/{name}.ref.json", "w") as f:
                json.dump(recorded, f)


if __name__ == "__main__":
    main()
