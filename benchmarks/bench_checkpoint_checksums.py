"""What the checksum manifest costs at save and at load, side by side.

    python benchmarks/bench_checkpoint_checksums.py                   # debug + a ~210 MB model
    torchrun --nproc-per-node 2 benchmarks/bench_checkpoint_checksums.py --sizes bench

For each model (the registry's ``debug``; ``bench``: 8 layers, hidden 768, 53M parameters,
about 210 MB in fp32; weights only), rounds alternate between a save with the manifest and one
without (``write_manifest`` replaced by a no-op), then between a load that verifies the manifest and
one that does not (``verify_manifest`` replaced). Times are medians over the rounds; the report
gives the shard bytes and the ratio. Checkpoints go under ``--dir`` (default: the temporary
directory; use the filesystem that matters, e.g. the cluster's shared one).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.checkpointing import checksums
from megatron_dscoder.config import cli as arguments
from megatron_dscoder.parallel import distributed
from megatron_dscoder.training.build import build_model_chunks, build_transformer_config

BENCH = dict(num_layers=8, hidden_size=768, ffn_hidden_size=2048, num_attention_heads=8)


@contextmanager
def without_checksums():
    """Saves and loads as they were before manifests: the two steps replaced by no-ops."""
    write, verify = checksums.write_manifest, checksums.verify_manifest
    checksums.write_manifest = lambda ckpt_dir: None
    checksums.verify_manifest = lambda ckpt_dir: []
    try:
        yield
    finally:
        checksums.write_manifest, checksums.verify_manifest = write, verify


def timed(fn) -> float:
    torch.distributed.barrier()
    start = time.perf_counter()
    fn()
    torch.distributed.barrier()
    return time.perf_counter() - start


def measure(size: str, rounds: int, root: Path) -> dict[str, float]:
    _, run = arguments.parse(
        ["--model", "debug", "--mock-data", "--seq-length", "64", "--global-batch-size", "8"],
        arguments.world_size_from_env(),
    )
    if size == "bench":
        run = dataclasses.replace(run, arch=dataclasses.replace(run.arch, **BENCH))
    distributed.initialize(run.parallel, run.train.seed)
    model = build_model_chunks(run, build_transformer_config(run))
    optimizer = None  # Adam's moments exist only after a step: weights only, both sides alike
    meta = {"arch": dataclasses.asdict(run.arch), "run_id": "bench"}
    times: dict[str, list[float]] = {"save": [], "save_plain": [], "load": [], "load_plain": []}
    path = root / size
    for i in range(rounds + 1):  # round 0 warms caches and megatron-core's writer up
        for key, guard in (("save", nullcontext), ("save_plain", without_checksums)):
            with guard():
                elapsed = timed(
                    functools.partial(
                        checkpointing.save_checkpoint,
                        path,
                        iteration=1,
                        model=model,
                        optimizer=optimizer,
                        run_meta=meta,
                    )
                )
            if i:
                times[key].append(elapsed)
        ckpt = checkpointing.iteration_dir(path, 1)
        checksums.write_manifest(ckpt)  # the last save was the plain one
        for key, guard in (("load", nullcontext), ("load_plain", without_checksums)):
            with guard():
                elapsed = timed(
                    functools.partial(
                        checkpointing.load_checkpoint, ckpt, model=model, optimizer=optimizer
                    )
                )
            if i:
                times[key].append(elapsed)
    shard_bytes = sum(p.stat().st_size for p in ckpt.glob("*.distcp"))
    distributed.destroy(keep_process_group=True)
    return {"bytes": shard_bytes, **{k: statistics.median(v) for k, v in times.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["debug", "bench"], choices=["debug", "bench"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", default=None, help="where checkpoints are written")
    args = p.parse_args()
    # One directory for all ranks: torchrun's workers share their parent's pid.
    root = Path(args.dir or tempfile.gettempdir()) / f"bench_checksums_{os.getppid()}"
    results = {size: measure(size, args.rounds, root) for size in args.sizes}
    torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        shutil.rmtree(root, ignore_errors=True)
        for size, r in results.items():
            sys.stdout.write(
                f"{size}: {r['bytes'] / 1e6:.1f} MB of shards, "
                f"{torch.distributed.get_world_size()} rank(s), median of {args.rounds}\n"
                f"  save  {r['save_plain']:.3f} s -> {r['save']:.3f} s with manifest "
                f"(x{r['save'] / r['save_plain']:.3f}, +{r['save'] - r['save_plain']:.3f} s)\n"
                f"  load  {r['load_plain']:.3f} s -> {r['load']:.3f} s verified "
                f"(x{r['load'] / r['load_plain']:.3f}, +{r['load'] - r['load_plain']:.3f} s)\n"
            )
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
