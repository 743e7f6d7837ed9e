"""The training loop's overhead against a bare megatron-core loop doing the same work.

    python benchmarks/bench_loop.py                       # debug model, CPU, ~1 minute
    python benchmarks/bench_loop.py --iters 30 --rounds 5 --seq-length 128

Both loops run in one process on the same model (same init, same mock batches): ``ours`` is
``megatron_dscoder``'s Trainer (data loader, LR schedule, NaN checks, metrics with tokens/s,
TFLOP/s and memory), ``bare`` is megatron-core's schedule + optimizer on pre-built in-memory
batches, the minimum any loop must do. Rounds alternate between the two, so machine noise hits
both alike; the report gives medians and their ratio, and the share of our step time spent
waiting for data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from megatron_dscoder.config import cli as arguments
from megatron_dscoder.datasets.mock import MockTokens
from megatron_dscoder.parallel import distributed
from megatron_dscoder.training.build import (
    build_model_chunks,
    build_optimizer,
    build_transformer_config,
)
from megatron_dscoder.training.loop import Trainer, TrainState
from megatron_dscoder.training.metrics import JsonlSink, MetricsLogger
from megatron_dscoder.training.step import make_forward_step


def bare_iteration_ms(run, model, optimizer, iters: int) -> list[float]:
    """megatron-core alone: schedule + DDP + optimizer on batches already in memory."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    t = run.train
    ds = MockTokens(run.arch.vocab_size, t.seq_length, t.seed)
    batches = []
    for i in range(run.num_microbatches):
        samples = [ds[i * t.micro_batch_size + k] for k in range(t.micro_batch_size)]
        batches.append({k: torch.stack([s[k] for s in samples]) for k in samples[0]})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        for chunk in model:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        get_forward_backward_func()(
            forward_step_func=make_forward_step(),
            data_iterator=iter(batches),
            model=model,
            num_microbatches=run.num_microbatches,
            seq_length=t.seq_length,
            micro_batch_size=t.micro_batch_size,
            forward_only=False,
        )
        optimizer.step()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def ours_iteration_ms(run, model, optimizer, iters: int, workdir: Path) -> tuple[list, list]:
    """megatron_dscoder's Trainer for ``iters`` iterations: (ms per iteration, data-wait share)."""
    path = workdir / f"ours-{time.monotonic_ns()}.jsonl"
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, train_iters=iters))
    metrics = MetricsLogger([JsonlSink(str(path))])
    datasets = (MockTokens(run.arch.vocab_size, run.train.seq_length, run.train.seed), None)
    Trainer(run, model, optimizer, datasets, metrics, TrainState()).train()
    metrics.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["elapsed_ms"] for r in rows], [r["data_wait_fraction"] for r in rows]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=None, help="default: the loop's")
    args = p.parse_args()
    _, run = arguments.parse(
        [
            "--model",
            "debug",
            "--mock-data",
            "--global-batch-size",
            "8",
            "--micro-batch-size",
            "2",
            "--seq-length",
            str(args.seq_length),
            "--train-iters",
            str(args.iters),
            *(["--num-workers", str(args.num_workers)] if args.num_workers is not None else []),
        ],
        1,
    )
    distributed.initialize(run.parallel, run.train.seed)
    model = build_model_chunks(run, build_transformer_config(run))
    optimizer = build_optimizer(run, model)
    bare, ours, waits, cpu_bare, cpu_ours = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        bare_iteration_ms(run, model, optimizer, 3)  # warm-up
        for _ in range(args.rounds):
            start = time.process_time()
            bare += bare_iteration_ms(run, model, optimizer, args.iters)[1:]
            cpu_bare.append((time.process_time() - start) * 1000.0 / args.iters)
            start = time.process_time()
            times, wait = ours_iteration_ms(run, model, optimizer, args.iters, Path(tmp))
            cpu_ours.append((time.process_time() - start) * 1000.0 / args.iters)
            ours += times[1:]  # the first includes DataLoader worker start-up
            waits += wait[1:]
    distributed.destroy()
    b, o = statistics.median(bare), statistics.median(ours)
    cb, co = statistics.median(cpu_bare), statistics.median(cpu_ours)
    print(
        f"bare megatron-core loop : {b:8.2f} ms/iteration wall, {cb:8.2f} ms CPU "
        f"(medians of {len(bare)} iterations / {len(cpu_bare)} rounds)"
    )
    print(f"megatron_dscoder loop   : {o:8.2f} ms/iteration wall, {co:8.2f} ms CPU")
    print(
        f"ratio ours/bare         : {o / b:8.3f} wall, {co / cb:.3f} CPU time "
        "(CPU time is robust to other processes on the machine)"
    )
    print(f"data wait (median share of step time): {100 * statistics.median(waits):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
