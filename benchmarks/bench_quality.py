"""Benchmark: drop rate of every quality rule on real code, with examples, and parse speed.

Builds (or reads) the real-code corpus of ``benchmarks/bench_preprocess.py`` (the standard
library and site-packages of this interpreter, no download), applies the paper's filters, then
every quality rule of :mod:`megatron_dscoder.preprocess.stages.quality` on its own (``--examples``
paths per rule), and prints per rule and per language: files dropped, share of files and bytes,
and the parse time per language (MB/s). The README's drop-rate table comes from::

    python benchmarks/bench_quality.py --workdir out/bench --corpus-mb 64

With ``--pipeline-runs N`` it then runs ``tools/preprocess_data.py`` on the same corpus N times
with quality screening (the default) and N times with ``--no-quality``, alternating, and prints
the median wall and CPU-time throughput ratio (with / without); the tokenizer is
``--tokenizer-model`` or a 32k one trained on a quarter of the corpus::

    python benchmarks/bench_quality.py --workdir out/bench --corpus-mb 64 --pipeline-runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

try:
    import megatron_dscoder  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from megatron_dscoder.preprocess.config import (
    DEFAULT_LONG_FUNCTION_LINES,
    DEFAULT_MAX_ERROR_FRACTION,
)
from megatron_dscoder.preprocess.stages.filters import drop_reason
from megatron_dscoder.preprocess.stages.quality import is_generated, is_minified
from megatron_dscoder.preprocess.stages.syntax import parse_result, supported

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_preprocess import build_corpus, run_pipeline

from megatron_dscoder.preprocess.tokenizer.train import (
    save_tokenizer_dir,
    train_tokenizer,
)


def compare_pipeline(
    corpus: Path, workdir: Path, tok: Path | None, runs: int, workers: int
) -> None:
    """Alternating pipeline runs with and without quality screening; median ratios."""
    texts = [orjson.loads(line)["text"] for line in corpus.read_bytes().splitlines()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    tok = tok or workdir / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        save_tokenizer_dir(train_tokenizer(texts[: max(1, len(texts) // 4)], 32000), tok)
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    for run in range(runs):
        for mode, extra in (("on", []), ("off", ["--no-quality"])) if run % 2 == 0 else (
            ("off", ["--no-quality"]), ("on", [])):  # fmt: skip
            result = run_pipeline(corpus, tok, workdir / "out" / f"code-{mode}", workers, extra)
            wall[mode].append(result["wall"])
            cpu[mode].append(result["cpu"])
            print(f"run {run + 1} quality {mode}: {mb / result['wall']:.2f} MB/s wall, "
                  f"{result['cpu']:.0f}s CPU", flush=True)  # fmt: skip
    ratio = statistics.median(wall["off"]) / statistics.median(wall["on"])
    cpu_ratio = statistics.median(cpu["off"]) / statistics.median(cpu["on"])
    print(f"{mb:.1f} MB, {runs} runs each: throughput with / without quality screening = "
          f"{ratio:.3f} (median wall), {cpu_ratio:.3f} (median CPU time)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("out/bench"))
    parser.add_argument("--corpus", type=Path, help="JSONL corpus (default: build one)")
    parser.add_argument("--corpus-mb", type=float, default=64.0)
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--max-error-fraction", type=float, default=DEFAULT_MAX_ERROR_FRACTION)
    parser.add_argument("--max-function-lines", type=int, default=DEFAULT_LONG_FUNCTION_LINES)
    parser.add_argument("--no-filters", action="store_true", help="rules on unfiltered files")
    parser.add_argument("--pipeline-runs", type=int, default=0, help="see the docstring")
    parser.add_argument("--tokenizer-model", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    corpus = args.corpus or args.workdir / f"corpus-{args.corpus_mb:g}mb.jsonl"
    if not corpus.exists():
        build_corpus(corpus, args.corpus_mb)
    files = [orjson.loads(line) for line in corpus.read_bytes().splitlines()]
    if not args.no_filters:
        files = [f for f in files if drop_reason(f["text"], f["lang"]) is None]
    total_bytes = sum(len(f["text"].encode()) for f in files)
    dropped: dict[str, list[dict]] = defaultdict(list)
    per_lang: Counter[str] = Counter()
    parse_seconds: Counter[str] = Counter()
    parse_bytes: Counter[str] = Counter()
    for f in files:
        text, lang = f["text"], f["lang"]
        if is_generated(text):
            dropped["generated"].append(f)
        if is_minified(text):
            dropped["minified"].append(f)
        if not supported(lang):
            continue
        start = time.perf_counter()
        result = parse_result(text, lang, args.max_error_fraction)
        parse_seconds[lang] += time.perf_counter() - start
        parse_bytes[lang] += len(text.encode())
        per_lang[lang] += 1
        if not result.ok:
            dropped["syntax_error"].append(f)
            per_lang[f"{lang}:dropped"] += 1
        elif result.longest_function > args.max_function_lines:
            dropped["long_function"].append(f)
    print(f"{len(files)} files, {total_bytes / 1e6:.1f} MB after filters={not args.no_filters}")
    for rule in ("generated", "minified", "syntax_error", "long_function"):
        hits = dropped[rule]
        size = sum(len(f["text"].encode()) for f in hits)
        print(
            f"{rule:14s} {len(hits):6d} files ({100 * len(hits) / max(len(files), 1):.2f} %), "
            f"{size / 1e6:.2f} MB ({100 * size / max(total_bytes, 1):.2f} % of bytes)"
        )
        for f in hits[: args.examples]:
            print(f"    {f['repo']}/{f['path']}")
    for lang in sorted(k for k in per_lang if ":" not in k):
        print(
            f"parse {lang:11s} {per_lang[lang]:6d} files, "
            f"dropped {per_lang[f'{lang}:dropped']:5d}, "
            f"{parse_bytes[lang] / 1e6 / max(parse_seconds[lang], 1e-9):.1f} MB/s"
        )
    if args.pipeline_runs:
        compare_pipeline(
            corpus, args.workdir, args.tokenizer_model, args.pipeline_runs, args.workers
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
