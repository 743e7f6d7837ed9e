"""Measure what the debug model really allocates on CPU and print it next to the plan (JSON).

python tests/workers/planner_check.py [--use-distributed-optimizer]
"""

import json
import sys

from megatron_dscoder.config import cli as arguments
from megatron_dscoder.datasets.gpt import MicroBatchSampler, loader
from megatron_dscoder.datasets.mock import MockTokens
from megatron_dscoder.parallel import distributed
from megatron_dscoder.training import planner
from megatron_dscoder.training.build import (
    build_model_chunks,
    build_optimizer,
    build_transformer_config,
)
from megatron_dscoder.training.step import train_step


def main() -> None:
    _, run = arguments.parse(
        [
            "--model",
            "debug",
            "--mock-data",
            "--seq-length",
            "32",
            "--global-batch-size",
            "2",
            *sys.argv[1:],
        ],
        1,
    )
    distributed.initialize(run.parallel, run.train.seed)
    model = build_model_chunks(run, build_transformer_config(run))
    optimizer = build_optimizer(run, model)
    sampler = MicroBatchSampler(
        total_samples=2, consumed_samples=0, micro_batch_size=1, dp_rank=0, dp_size=1
    )
    data = loader(MockTokens(run.arch.vocab_size, 32, 0), sampler, num_workers=0)
    train_step(model, optimizer, data, num_microbatches=2, seq_length=32, micro_batch_size=1)
    buffers = model[0].buffers
    if buffers[0].param_data is not None:
        weights = sum(b.param_data.numel() * b.param_data.element_size() for b in buffers)
    else:
        weights = sum(p.numel() * p.element_size() for p in model[0].parameters())
    grads = sum(b.grad_data.numel() * b.grad_data.element_size() for b in buffers)
    opts = getattr(optimizer, "chained_optimizers", [optimizer])
    state = sum(
        t.numel() * t.element_size()
        for o in opts
        for s in o.optimizer.state.values()
        for k, t in s.items()
        if k in ("exp_avg", "exp_avg_sq")
    )
    (p,) = planner.plan(run, mixed_precision=False)
    print(
        json.dumps(
            {
                "actual": [weights, grads, state],
                "planned": [p.weights, p.grads, p.optimizer],
                "params": [sum(x.numel() for x in model[0].parameters()), p.params],
            }
        )
    )
    distributed.destroy()


if __name__ == "__main__":
    main()
