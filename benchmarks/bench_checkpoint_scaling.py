"""Per-rank host memory and bytes written by one checkpoint save, before and after.

    python benchmarks/bench_checkpoint_scaling.py                  # DP=4 on CPU (gloo)
    python benchmarks/bench_checkpoint_scaling.py --dp 8 --json out.json

Each format is measured in its own ``torchrun`` launch (fresh processes), data parallelism only,
the distributed optimizer on, and the debug model widened to ``--hidden-size`` so that the
optimizer state dominates fixed costs:

* ``before``: the layout this project saved with before, ``fully_reshardable`` with every rank
  gathering the whole state (megatron-core's default for that layout) and no fully-parallel
  writer, so DP rank 0 writes every replicated tensor;
* ``after``: routine saves now, ``dp_reshardable`` through megatron-core's fully-parallel writer.

Memory is the resident set (RSS) of each rank's training process, read from the kernel: the
high-water mark (``VmHWM``) is reset just before the save (``/proc/self/clear_refs``) after freed
heap memory was returned (``malloc_trim``), so the peak is the most the process held at once
during the save, torch's tensors and Python's objects alike (``tracemalloc`` would miss the
former). Reported: that peak, and its increase over the resident set before the save (what the
save itself allocates). A warm-up save first pays for lazy imports and megatron-core's writer
set-up. The writer processes megatron-core forks share the rank's pages copy-on-write and are not
counted. Bytes are the sizes of the files each rank wrote: torch_dist names a rank's shards
``__RANK_*.distcp``; rank 0 writes the rest (``common.pt``, ``.metadata``, ``metadata.json``,
``run_config.json``, ``checksums.json``). Both measures are exact and do not depend on load.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FORMATS = ("before", "after")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> int:
    """Return freed heap pages to the kernel, restart the high-water mark; the RSS now (KiB)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kib("VmRSS")


def _save_format(name: str):
    from megatron_dscoder.checkpointing.formats import FULLY_RESHARDABLE, SaveFormat

    if name == "before":
        return SaveFormat(optimizer=FULLY_RESHARDABLE, mem_efficient=False, fully_parallel=False)
    return SaveFormat()


def worker(fmt_name: str, hidden: int, root: Path, out: Path) -> None:
    """One rank: build the model and the distributed optimizer, save twice, report the second."""
    import torch

    from megatron_dscoder.checkpointing import checkpoint as checkpointing
    from megatron_dscoder.checkpointing import checksums, distopt_state
    from megatron_dscoder.config import cli as arguments
    from megatron_dscoder.parallel import distributed
    from megatron_dscoder.training.build import (
        build_model_chunks,
        build_optimizer,
        build_transformer_config,
    )

    flags = "--model debug --mock-data --seq-length 64 --bf16 --use-distributed-optimizer"
    world = arguments.world_size_from_env()
    _, run = arguments.parse([*flags.split(), "--global-batch-size", str(world)], world)
    arch = dataclasses.replace(
        run.arch, hidden_size=hidden, ffn_hidden_size=hidden * 11 // 4, num_attention_heads=8
    )
    run = dataclasses.replace(run, arch=arch)
    distributed.initialize(run.parallel, run.train.seed)
    model = build_model_chunks(run, build_transformer_config(run))
    optimizer = build_optimizer(run, model)
    distopt_state.allocate_state(optimizer)  # Adam's moments, as after a first step
    params = sum(p.numel() for p in model[0].parameters())
    fmt = _save_format(fmt_name)
    meta = {"arch": dataclasses.asdict(run.arch), "run_id": "bench"}
    save = dict(model=model, optimizer=optimizer, run_meta=meta, fmt=fmt)
    checkpointing.save_checkpoint(root / "warmup", iteration=1, **save)
    rss_before = _reset_peak()
    checkpointing.save_checkpoint(root / "measured", iteration=1, **save)
    peak = _rss_kib("VmHWM")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    ckpt = checkpointing.iteration_dir(root / "measured", 1)
    written = sum(p.stat().st_size for p in checksums.written_by(ckpt, rank, world))
    mine = {"rank": rank, "peak_mib": peak / 1024, "increase_mib": (peak - rss_before) / 1024}
    mine["written_mib"] = written / 2**20
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    if rank == 0:
        state_mib = params * 12 / 2**20  # fp32 main weights + Adam's two moments, whole model
        report = {"format": fmt_name, "dp": world, "params": params, "state_mib": state_mib}
        out.write_text(json.dumps({**report, "ranks": gathered}, indent=1) + "\n")
    distributed.destroy()


def ratio(values: list[float]) -> float:
    """max / mean."""
    return max(values) / (sum(values) / len(values))


def launch(fmt_name: str, dp: int, hidden: int, tmp: Path) -> dict:
    """One torchrun launch of :func:`worker` on ``dp`` local ranks; its report."""
    out = tmp / f"{fmt_name}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={dp}", __file__, "--worker", fmt_name]
    cmd += ["--hidden-size", str(hidden), "--dir", str(tmp / fmt_name), "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"{fmt_name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())


def summary(r: dict) -> dict:
    """The figures the report prints (and a test asserts on)."""
    ranks = r["ranks"]
    cols = {k: [x[k] for x in ranks] for k in ("peak_mib", "increase_mib", "written_mib")}
    return {
        **{f"{k}_max_over_mean": ratio(v) for k, v in cols.items()},
        **{f"{k}_max": max(v) for k, v in cols.items()},
        "state_mib": r["state_mib"],
        "per_rank": cols,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dp", type=int, default=4, help="data-parallel ranks (default: 4)")
    p.add_argument("--hidden-size", type=int, default=512, help="debug model width (512)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=FORMATS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.hidden_size, Path(args.dir), Path(args.json))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_ckpt_scaling_"))
    try:
        results = {f: summary(launch(f, args.dp, args.hidden_size, tmp)) for f in args.formats}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state = next(iter(results.values()))["state_mib"]
    lines = [
        f"DP={args.dp}, hidden {args.hidden_size}, bf16, distributed optimizer: whole-model "
        f"optimizer state {state:.1f} MiB (fp32 weights + 2 Adam moments)",
        f"{'':8}{'peak RSS at save':>28}{'increase during save':>34}{'bytes written':>30}",
        f"{'':8}{'max MiB':>12}{'max/mean':>16}{'max MiB':>14}{'max/mean':>20}"
        f"{'max MiB':>14}{'max/mean':>16}",
    ]
    for name, s in results.items():
        lines.append(
            f"{name:8}{s['peak_mib_max']:12.1f}{s['peak_mib_max_over_mean']:16.3f}"
            f"{s['increase_mib_max']:14.1f}{s['increase_mib_max_over_mean']:20.3f}"
            f"{s['written_mib_max']:14.1f}{s['written_mib_max_over_mean']:16.3f}"
        )
        for key in ("increase_mib", "written_mib"):
            per_rank = ", ".join(f"{v:.1f}" for v in s["per_rank"][key])
            lines.append(f"{'':8}{key} per rank: {per_rank}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
