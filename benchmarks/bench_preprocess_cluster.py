"""Benchmark: the preprocessing driver on a real multi-node Ray cluster (two nodes, one machine).

Starts a Ray cluster with ``ray.cluster_utils.Cluster`` (a head node and ``--nodes - 1``
worker nodes, ``--cpus`` CPUs each, real raylets in their own processes), then runs
``tools/preprocess_data.py --engine ray --ray-address ADDR`` as a separate driver process on
JSONL corpora of ``--sizes`` MB of real code, and prints per corpus:

- the driver process's own I/O (``rchar + wchar`` of ``/proc/PID/io``, read as it exits) and
  its growth per added input byte (the acceptance bound is 0.1);
- the driver's peak RSS, and the seconds of each pass (from the stats JSON);
- whether ``.bin``/``.idx`` are byte-identical to ``--engine local`` on the same corpus.

Run from the repository root (builds corpora and a tokenizer under ``--workdir``)::

    python benchmarks/bench_preprocess_cluster.py --workdir out/bench-cluster --sizes 4 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import resource, runpy, sys
sys.argv = ["preprocess_data.py", *sys.argv[1:]]
try:
    runpy.run_path("tools/preprocess_data.py", run_name="__main__")
finally:
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("DRIVER", int(io["rchar"]) + int(io["wchar"]), rss, file=sys.stderr)
"""


def build(workdir: Path, megabytes: float) -> Path:
    from bench_preprocess import build_corpus  # (its directory is on sys.path) real code

    path = workdir / f"corpus-{megabytes:g}mb.jsonl"
    if not path.exists():
        build_corpus(path, megabytes)
    return path


def run_tool(args: list[str]) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *args], cwd=REPO_ROOT, capture_output=True, text=True
    )
    line = next((x for x in done.stderr.splitlines() if x.startswith("DRIVER")), None)
    if done.returncode or line is None:
        raise SystemExit(f"preprocess failed:\n{done.stderr[-3000:]}")
    _, io, rss = line.split()
    return int(io), int(rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "out" / "bench-cluster")
    parser.add_argument("--sizes", type=float, nargs="+", default=[4.0, 16.0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--tokenizer-model", type=Path, help="default: train a 4k one")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    from megatron_dscoder.preprocess.tokenizer.train import save_tokenizer_dir, train_tokenizer

    args.workdir.mkdir(parents=True, exist_ok=True)
    corpora = [build(args.workdir, mb) for mb in args.sizes]
    tokenizer = args.tokenizer_model or args.workdir / "tokenizer"
    if not (tokenizer / "tokenizer.json").exists() and args.tokenizer_model is None:
        texts = [json.loads(x)["text"] for x in corpora[0].open()][:300]
        save_tokenizer_dir(train_tokenizer(texts, vocab_size=4000), tokenizer)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus})
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=args.cpus)
    cluster.wait_for_nodes()
    rows = []
    try:
        for corpus in corpora:
            out = args.workdir / corpus.stem
            common = ["--input", str(corpus), "--tokenizer-model", str(tokenizer), "--no-progress"]
            stats = out / "ray.json"
            io, rss = run_tool([*common, "--engine", "ray", "--ray-address", cluster.address,
                                "--partition-mb", "1", "--output-shard-mb", "0",
                                "--output-prefix", str(out / "ray"),
                                "--stats-json", str(stats)])  # fmt: skip
            run_tool([*common, "--workers", "2", "--output-prefix", str(out / "local")])
            same = all(
                (out / f"ray.{e}").read_bytes() == (out / f"local.{e}").read_bytes()
                for e in ("bin", "idx")
            )
            seconds = json.loads(stats.read_text())["seconds"]
            rows.append((corpus.stat().st_size, io, rss, same, seconds))
            print(f"{corpus.name}: {corpus.stat().st_size / 1e6:.1f} MB, driver I/O {io} B, "
                  f"peak RSS {rss / 1024:.0f} MiB, identical to local: {same}, "
                  f"seconds {seconds}")  # fmt: skip
    finally:
        cluster.shutdown()
    if len(rows) > 1:
        growth = (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])
        print(f"driver I/O growth: {growth:.5f} byte per added input byte (bound 0.1)")
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
