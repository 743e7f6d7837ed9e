"""Benchmark: the near-dedup tasks at scale, rates per step and the extrapolation to 3 TB.

Writes ``--samples`` MinHash signatures spread over ``--tasks`` band files, as the pipeline's
tasks write them (one shard each), a ``--dup-fraction`` of them copies of earlier samples
(half exact, half with ``--edit`` of their positions changed, so that they collide in only
some bands), then runs the production dedup
(``megatron_dscoder.preprocess.tasks.dedup.deduplicate``: one merge task per band, the verification
tasks, the components) on the local engine with ``--workers`` processes, and prints:

- band records, candidate pairs (summed over bands), unique pairs, verified pairs, dropped;
- per step, the task seconds summed and the rate per core (records/s for the band merges,
  unique pairs/s for verification), the wall time, and the files opened per step;
- the extrapolation to ``--corpus-files`` files (603 M: the paper's corpus after filtering) on
  ``--nodes`` x ``--cores``, with the bound that one merge task per band sets (the wall time of
  one band's merge can not be split further), assuming this run's pairs per sample.

Run from the repository root::

    python benchmarks/bench_dedup_scale.py --samples 1000000 --tasks 64
    python benchmarks/bench_dedup_scale.py --samples 20000 --tasks 8 --workers 1   # seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

try:
    import megatron_dscoder  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from megatron_dscoder.preprocess.config import MIB
from megatron_dscoder.preprocess.stages.minhash import MinHashConfig, band_layout
from megatron_dscoder.preprocess.tasks.dedup import deduplicate_shards


def synthetic_signatures(
    samples: int, dup_fraction: float, edit: float, num_perm: int, seed: int
) -> np.ndarray:
    """(samples, num_perm) uint32; copies point back to earlier samples."""
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32 - 1, size=(samples, num_perm), dtype=np.uint32)
    copies = np.flatnonzero(rng.random(samples) < dup_fraction)
    copies = copies[copies > 0]
    sources = (rng.random(copies.size) * copies).astype(np.int64)
    sig[copies] = sig[sources]
    edited = copies[rng.random(copies.size) < 0.5]
    for row in edited.tolist():
        where = rng.random(num_perm) < edit
        sig[row, where] = rng.integers(0, 2**32 - 1, size=int(where.sum()), dtype=np.uint32)
    return sig


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--dup-fraction", type=float, default=0.2)
    parser.add_argument("--edit", type=float, default=0.15)
    parser.add_argument("--group-mb", type=float, default=64.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus-files", type=float, default=603e6)
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--cores", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    minhash = MinHashConfig()
    bands = band_layout(minhash)[0]
    sig = synthetic_signatures(args.samples, args.dup_fraction, args.edit, minhash.num_perm,
                               args.seed)  # fmt: skip
    cuts = np.linspace(0, args.samples, args.tasks + 1).astype(np.int64)
    seconds: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        started = time.perf_counter()
        _, counts = deduplicate_shards(
            work, [sig[cuts[t] : cuts[t + 1]] for t in range(args.tasks)], minhash,
            int(args.group_mb * MIB), args.workers, seconds,
        )  # fmt: skip
        wall = time.perf_counter() - started - seconds["dedup_band_files"]
    written = seconds["dedup_band_files"]
    opened = {
        "band merges (band files)": bands * args.tasks,
        "verification (pair files)": counts["verify_tasks"] * bands * counts["key_ranges"],
    }
    records, unique = counts["band_records"], counts["unique_candidate_pairs"]
    print(
        f"{args.samples:,} samples in {args.tasks} band files ({records * 16 / MIB:.0f} MiB of "
        f"band records, written in {written:.1f} s), {bands} bands, {counts['key_ranges']} key "
        f"ranges per band, {counts['verify_tasks']} verification tasks, {args.workers} workers"
    )
    print(
        f"candidate pairs {counts['candidate_pairs']:,} (over bands) -> unique "
        f"{unique:,} -> verified {counts['verified_pairs']:,}; dropped {counts['dropped']:,}"
    )
    merge_rate = records / max(seconds["dedup_merge"], 1e-9)
    verify_s = seconds["dedup_unique"] + seconds["dedup_verify"]
    verify_rate = unique / max(verify_s, 1e-9)
    print(f"band merges: {seconds['dedup_merge']:.2f} task-s, {merge_rate / 1e6:.2f} M records/s "
          f"per core; verification: {verify_s:.2f} task-s, {verify_rate / 1e6:.2f} M pairs/s per "
          f"core; all steps {wall:.2f} s wall; files opened {opened}")  # fmt: skip
    total_records = args.corpus_files * bands
    total_pairs = unique / args.samples * args.corpus_files
    one_band = total_records / bands / merge_rate
    for nodes in args.nodes:
        cores = nodes * args.cores
        merge = max(total_records / merge_rate / cores, one_band)
        verify = total_pairs / verify_rate / cores
        print(f"{args.corpus_files / 1e6:.0f} M files on {nodes} x {args.cores} cores: band merges "
              f"{merge / 60:.1f} min (one band alone {one_band / 60:.1f} min), verification "
              f"{verify / 60:.1f} min for {total_pairs / 1e6:.0f} M unique pairs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
