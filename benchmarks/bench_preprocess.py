"""Benchmark: the preprocessing pipeline against the raw tokenizer on the same text.

Prints, for a JSONL code corpus:

- raw ``tokenizers`` throughput: ``Tokenizer.encode_batch_fast`` (the reference the
  acceptance criterion names: the pipeline must reach 0.95 x its throughput) and
  ``Tokenizer.encode_batch``, in MB/s of UTF-8 text, on the whole corpus in batches of about
  4 MB, each in a fresh process with the tokenizer's own threads;
- the end-to-end throughput of ``tools/preprocess_data.py`` (a fresh process: start-up,
  filters, quality screening, repository ordering, decontamination, near-dedup, FIM,
  tokenisation, writing, finalisation), in MB/s of the same text, and its ratio to each raw
  throughput; both raw ones are measured right before and right after each pipeline run
  (their mean is used) so that all see the same machine load. The headline is the median
  over runs of the ratio to ``encode_batch_fast``, in wall time and in CPU seconds (raw /
  pipeline, all processes; shared machines disturb CPU seconds less than wall time);
- seconds per pass and per stage (from the pipeline's stats JSON), and the peak RSS of the
  pipeline's whole process tree (main + workers, sampled every 20 ms) and of its largest process;
- what near-dedup and decontamination found (both on by default; ``--extra --no-dedup
  --no-decontaminate`` measures the pipeline without them);
- with ``--check-ray``, one more run of the same command with ``--engine ray`` (a local Ray
  instance) and whether its ``.bin``/``.idx`` are byte-identical to the last local run's.

Without ``--corpus`` it builds a real-code corpus from the running interpreter's standard
library and site-packages (no download): source files of known languages, one record per file
with ``repo`` (the top-level package), ``path`` and ``lang``, at most ``--corpus-mb`` MB, records
shuffled (seeded) so that files of a repository are scattered as in The Stack. It also trains a
32k tokenizer on the corpus unless ``--tokenizer-model`` is given.

Typical runs, from the repository root::

    python benchmarks/bench_preprocess.py --workdir out/bench --corpus-mb 64 --runs 3
    python benchmarks/bench_preprocess.py --workdir out/bench --runs 1 --check-ray
    python benchmarks/bench_preprocess.py --workdir out/bench --corpus-mb 64 --scale 2 --runs 1 \\
        --tokenizer-model out/bench/tokenizer      # 2x the data: RSS must not grow
    python benchmarks/bench_preprocess.py --workdir out/bench-toy --corpus-mb 4 --runs 1 \\
        --vocab-size 4000                          # a one-minute toy run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

try:
    import megatron_dscoder  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from megatron_dscoder.preprocess.records import language_of
from megatron_dscoder.preprocess.tokenizer.train import save_tokenizer_dir, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_NAMES = ("fast", "slow")  # encode_batch_fast, encode_batch
TARGET = 0.95  # pipeline / raw encode_batch_fast, the acceptance criterion
SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", "node_modules"}


def source_roots() -> list[tuple[str, Path]]:
    """(label, root) of the standard library and the site-packages of this interpreter."""
    paths = sysconfig.get_paths()
    roots = [("python-stdlib", Path(paths["stdlib"]))]
    for key in ("purelib", "platlib"):
        root = Path(paths[key])
        if all(root != r for _, r in roots):
            roots.append(("site-packages", root))
    return roots


def collect_repos() -> dict[str, list[tuple[str, Path, int]]]:
    """repo -> [(path in corpus, file, size)]; repos are top-level packages."""
    repos: dict[str, list[tuple[str, Path, int]]] = {}
    for label, root in source_roots():
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = sorted(
                d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")
                and not d.endswith((".dist-info", ".egg-info"))
            )  # fmt: skip
            rel_dir = Path(dirpath).relative_to(root)
            for name in sorted(files):
                if not language_of("", name) or name.endswith((".pyc", ".so")):
                    continue
                file = Path(dirpath) / name
                rel = (rel_dir / name).as_posix()
                repo = rel_dir.parts[0] if rel_dir.parts else label
                repos.setdefault(repo, []).append((rel, file, file.stat().st_size))
    return repos


def build_corpus(out: Path, target_mb: float, scale: int = 1, seed: int = 0) -> int:
    """Write a shuffled JSONL corpus of about ``target_mb`` MB; returns its text bytes.

    ``scale`` > 1 repeats the same files under renamed repositories (``repo~copy1`` ...): the
    same distribution of repository sizes, ``scale`` times the data (for memory scaling checks).
    """
    repos = collect_repos()
    target = int(target_mb * 1e6)
    lo, hi = 1, max(sum(s for _, _, s in files) for files in repos.values())
    while lo < hi:  # the per-repository cap that makes the corpus about target bytes
        cap = (lo + hi) // 2
        total = sum(min(cap, sum(s for _, _, s in files)) for files in repos.values())
        lo, hi = (cap + 1, hi) if total < target else (lo, cap)
    records = []
    for repo in sorted(repos):
        taken = 0
        for rel, file, size in repos[repo]:
            if taken >= lo:
                break
            try:
                text = file.read_text("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            taken += size
            lang = language_of("", rel)
            for copy in range(scale):
                name = f"{repo}~copy{copy}" if copy else repo
                records.append(
                    orjson.dumps({"text": text, "repo": name, "path": rel, "lang": lang})
                )
    random.Random(seed).shuffle(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        for line in records:
            f.write(line + b"\n")
    return sum(len(orjson.loads(line)["text"].encode()) for line in records)


def load_texts(corpus: Path) -> list[str]:
    texts = []
    with open(corpus, "rb") as f:
        for line in f:
            obj = orjson.loads(line)
            texts.append(obj.get("text") or obj.get("content") or "")
    return texts


def raw_seconds(tok_path: Path, texts: list[str], fast: bool) -> tuple[float, float]:
    """(wall, CPU) seconds for the tokenizer alone to encode all texts (batches of ~4 MB)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path / "tokenizer.json"))
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    batches, batch, size = [], [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= 4_000_000:
            batches.append(batch)
            batch, size = [], 0
    batches.append(batch)
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        encode(batch, add_special_tokens=False)
    return time.perf_counter() - start, time.process_time() - cpu


def raw_in_child(tok_path: Path, corpus: Path, name: str) -> tuple[float, float]:
    """:func:`raw_seconds` in a fresh process (``--raw NAME``), like each pipeline run: in this
    long-lived process the raw rate drifts down from run to run (its heap after many batches
    of ``Encoding`` objects), which would flatter the later runs' ratios."""
    cmd = [sys.executable, __file__, "--raw", name, "--corpus", str(corpus),
           "--tokenizer-model", str(tok_path)]  # fmt: skip
    wall, cpu = json.loads(subprocess.run(cmd, capture_output=True, check=True).stdout)
    return wall, cpu


def _tree_rss(pid: int) -> tuple[int, int]:
    """(sum, max) of the resident set sizes of ``pid`` and its descendants, in bytes."""
    pids, total, largest = [pid], 0, 0
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                rss = next(
                    (int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS")), 0
                )
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def run_pipeline(
    corpus: Path, tok_path: Path, prefix: Path, workers: int, extra: list[str]
) -> dict:
    """Run tools/preprocess_data.py; returns wall seconds, peak RSS and its stats JSON."""
    stats_path = prefix.with_suffix(".stats.json")
    cmd = [
        sys.executable, str(REPO_ROOT / "tools" / "preprocess_data.py"), "--input", str(corpus),
        "--tokenizer-model", str(tok_path), "--output-prefix", str(prefix),
        "--workers", str(workers), "--fim-rate", "0.5", "--seed", "1234",
        "--stats-json", str(stats_path), "--no-progress", *extra,
    ]  # fmt: skip
    peak = {"sum": 0, "max": 0}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        while proc.poll() is None:
            total, largest = _tree_rss(proc.pid)
            peak["sum"], peak["max"] = max(peak["sum"], total), max(peak["max"], largest)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    stats = json.loads(stats_path.read_text())
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_sum": peak["sum"],
        "rss_max": peak["max"],
        "stats": stats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "out" / "bench")
    parser.add_argument(
        "--corpus", type=Path, help="JSONL corpus (default: build one in --workdir)"
    )
    parser.add_argument("--corpus-mb", type=float, default=64.0)
    parser.add_argument(
        "--scale", type=int, default=1, help="repeat the corpus N times under renamed repositories"
    )
    parser.add_argument("--tokenizer-model", type=Path, help="default: train one on the corpus")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--runs", type=int, default=3, help="raw/pipeline pairs (median is reported)"
    )
    parser.add_argument(
        "--check-ray",
        action="store_true",
        help="also run with --engine ray and compare the output bytes with the local engine's",
    )
    parser.add_argument(
        "--extra",
        nargs=argparse.REMAINDER,
        default=[],
        help="further flags for tools/preprocess_data.py",
    )
    parser.add_argument("--raw", choices=RAW_NAMES, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()  # fmt: skip
    if args.raw:  # one raw measurement, printed as JSON [wall, cpu] (see raw_in_child)
        fast = args.raw == "fast"
        print(json.dumps(raw_seconds(args.tokenizer_model, load_texts(args.corpus), fast)))
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    suffix = f"-x{args.scale}" if args.scale > 1 else ""
    corpus = args.corpus or args.workdir / f"corpus-{args.corpus_mb:g}mb{suffix}.jsonl"
    if not corpus.exists():
        start = time.perf_counter()
        text_bytes = build_corpus(corpus, args.corpus_mb, args.scale)
        took = time.perf_counter() - start
        print(f"built {corpus}: {text_bytes / 1e6:.1f} MB of text in {took:.0f}s")
    texts = load_texts(corpus)
    text_mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus {corpus}: {len(texts)} files, {text_mb:.1f} MB of text")
    tok_path = args.tokenizer_model or args.workdir / "tokenizer"
    if not (tok_path / "tokenizer.json").exists():
        start = time.perf_counter()
        sample = texts[: max(1, len(texts) // 4)]
        save_tokenizer_dir(train_tokenizer(sample, args.vocab_size), tok_path)
        print(f"trained {tok_path} on {len(sample)} files in {time.perf_counter() - start:.0f}s")

    def raw_pair() -> dict[str, tuple[float, float]]:
        return {name: raw_in_child(tok_path, corpus, name) for name in RAW_NAMES}

    raw = [raw_pair()]
    rows = []
    for run in range(args.runs):
        load_before = os.getloadavg()[0]
        pipe = run_pipeline(
            corpus, tok_path, args.workdir / "out" / "code", args.workers, args.extra
        )
        raw.append(raw_pair())  # brackets this run with the previous measurement
        row = {
            "pipe": text_mb / pipe["wall"], "rss_sum": pipe["rss_sum"], "rss_max": pipe["rss_max"],
            "stats": pipe["stats"], "wall": pipe["wall"], "cpu": pipe["cpu"],
        }  # fmt: skip
        for name in RAW_NAMES:
            wall = (raw[-2][name][0] + raw[-1][name][0]) / 2
            cpu = (raw[-2][name][1] + raw[-1][name][1]) / 2
            row[name] = text_mb / wall
            row[f"{name}_ratio"] = row["pipe"] / row[name]
            row[f"{name}_cpu"] = cpu
            row[f"{name}_cpu_ratio"] = cpu / pipe["cpu"]
        rows.append(row)
        print(
            f"run {run + 1}: pipeline {row['pipe']:.2f} MB/s ({pipe['wall']:.1f}s, "
            f"{pipe['cpu']:.0f} CPU-s) | raw encode_batch_fast {row['fast']:.2f} MB/s "
            f"({row['fast_cpu']:.0f} CPU-s), encode_batch {row['slow']:.2f} MB/s "
            f"({row['slow_cpu']:.0f} CPU-s) (means of before and after) | ratio to fast: wall "
            f"{row['fast_ratio']:.3f}, CPU {row['fast_cpu_ratio']:.3f} | ratio to encode_batch: "
            f"wall {row['slow_ratio']:.3f}, CPU {row['slow_cpu_ratio']:.3f} | peak RSS tree "
            f"{row['rss_sum'] / 2**20:.0f} MiB, largest process {row['rss_max'] / 2**20:.0f} MiB "
            f"| load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    keys = ("pipe", *RAW_NAMES, *(f"{n}_{k}" for n in RAW_NAMES for k in ("ratio", "cpu_ratio")))
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    stats = rows[-1]["stats"]
    each = ", ".join(f"{r['fast_ratio']:.3f}" for r in rows)
    print(
        f"\nHEADLINE (median of {len(rows)} runs): pipeline / raw encode_batch_fast = "
        f"{med['fast_ratio']:.3f} wall (runs: {each}), {med['fast_cpu_ratio']:.3f} CPU "
        f"(acceptance: >= {TARGET})"
    )
    print(
        f"pipeline / raw encode_batch = {med['slow_ratio']:.3f} wall, "
        f"{med['slow_cpu_ratio']:.3f} CPU"
    )
    print(
        f"median MB/s: pipeline {med['pipe']:.2f}, encode_batch_fast {med['fast']:.2f}, "
        f"encode_batch {med['slow']:.2f}"
    )
    print(
        f"peak RSS (whole tree, max over runs) = {max(r['rss_sum'] for r in rows) / 2**20:.0f} MiB"
    )
    print("seconds per pass (last run):", json.dumps(stats["seconds"]))
    print(
        "stage seconds summed over processes (last run):", json.dumps(stats["stage_seconds_summed"])
    )
    keys = (
        "documents_in",
        "documents_out",
        "files_out",
        "tokens",
        "bad_input",
        "filtered",
        "fim",
        "repo_level",
    )
    print("counts (last run):", json.dumps({k: stats[k] for k in keys}))  # fmt: skip
    print("dedup (last run):", json.dumps(stats.get("dedup")))
    print("decontamination (last run):", json.dumps(stats.get("decontamination")))
    if args.check_ray:
        local = args.workdir / "out" / "code"
        ray_prefix = args.workdir / "out-ray" / "code"
        ray_run = run_pipeline(
            corpus,
            tok_path,
            ray_prefix,
            args.workers,
            [*args.extra, "--engine", "ray", "--output-shard-mb", "0"],
        )
        same = all(
            Path(f"{local}.{ext}").read_bytes() == Path(f"{ray_prefix}.{ext}").read_bytes()
            for ext in ("bin", "idx")
        )
        print(
            f"--engine ray (local Ray): {text_mb / ray_run['wall']:.2f} MB/s "
            f"({ray_run['wall']:.1f}s, {ray_run['stats']['shards']} shards, peak RSS tree "
            f"{ray_run['rss_sum'] / 2**20:.0f} MiB); "
            f"output byte-identical to --engine local: {same}"
        )
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
