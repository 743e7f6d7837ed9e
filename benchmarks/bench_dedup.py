"""Benchmark: near-dedup recall and false positives on pairs of known Jaccard similarity.

Builds a synthetic set of text pairs: each pair is a random code-like document (identifiers
drawn from a large vocabulary, so that unrelated documents share no 5-grams) and a copy with a
random fraction of its words replaced, which gives Jaccard similarities (of word 5-gram sets,
computed exactly for every pair) spread over 0.3-1.0. All documents go through the production
dedup path: MinHash signatures, one band file per shard task, the per-band merge tasks (cut
into key ranges, to exercise the scratch path), the verification tasks and the connected
components. A pair counts as found when both documents end up in
one component (one of them is dropped).

Prints recall for pairs above ``threshold + 0.05``, the false-positive rate for pairs below
``threshold - 0.1``, per-similarity-bin rates, and signature throughput. Acceptance: recall
>= 0.95 and false positives <= 1 %. From the repository root::

    python benchmarks/bench_dedup.py                     # 2000 pairs, defaults
    python benchmarks/bench_dedup.py --pairs 500 --num-perm 128 --threshold 0.8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

try:
    import megatron_dscoder  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from megatron_dscoder.preprocess.stages.minhash import (
    MinHashConfig,
    band_layout,
    exact_jaccard,
    signatures,
)
from megatron_dscoder.preprocess.tasks.dedup import deduplicate_shards

KEYWORDS = ("def", "return", "if", "for", "in", "self", "import", "class", "while", "else")


def synthetic_pairs(pairs: int, seed: int = 0, words: int = 300) -> list[tuple[str, str]]:
    """``pairs`` (original, edited copy) documents with similarities spread over 0.3-1.0."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"name_{i:06d}" for i in range(200_000)]
    out = []
    for _ in range(pairs):
        length = int(rng.integers(words // 2, words * 2))
        doc = [
            KEYWORDS[k] if k < len(KEYWORDS) else vocabulary[int(rng.integers(len(vocabulary)))]
            for k in rng.integers(0, 3 * len(KEYWORDS), size=length)
        ]
        edit = rng.uniform(0.0, 0.12)  # each edited word breaks up to 5 shingles
        copy = list(doc)
        for position in np.flatnonzero(rng.random(length) < edit):
            copy[position] = vocabulary[int(rng.integers(len(vocabulary)))]
        lines = [" ".join(d[i : i + 8]) for d in (doc, copy) for i in range(0, length, 8)]
        split = -(-length // 8)
        out.append(("\n".join(lines[:split]) + "\n", "\n".join(lines[split:]) + "\n"))
    return out


def evaluate(
    pairs: list[tuple[str, str]], config: MinHashConfig, shards: int = 4, workers: int = 2
) -> dict[str, object]:
    """Run the dedup path over the pairs; returns similarities, found flags and timings."""
    texts = [t for pair in pairs for t in pair]
    similarity = np.array([exact_jaccard(a, b, config.ngram) for a, b in pairs])
    per_shard = -(-len(texts) // shards)
    start = time.perf_counter()
    sigs = [signatures(texts[i : i + per_shard], config) for i in range(0, len(texts), per_shard)]
    signed_at = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:  # small key ranges: exercise the range split
        ids, counts = deduplicate_shards(work, sigs, config, 1 << 14, workers)
    done = time.perf_counter()
    dropped = set(ids.tolist())

    def sample_id(i: int) -> int:
        return (i // per_shard) << 32 | (i % per_shard)

    found = np.array(
        [sample_id(2 * k) in dropped or sample_id(2 * k + 1) in dropped for k in range(len(pairs))]
    )
    return {
        "similarity": similarity, "found": found,
        "counts": counts,
        "mb": sum(len(t.encode()) for t in texts) / 1e6,
        "signature_seconds": signed_at - start, "group_seconds": done - signed_at,
    }  # fmt: skip


def rates(result: dict[str, object], threshold: float) -> tuple[float, float, int, int]:
    """(recall above threshold + 0.05, false-positive rate below threshold - 0.1, counts)."""
    similarity, found = result["similarity"], result["found"]
    high = similarity >= threshold + 0.05
    low = similarity < threshold - 0.1
    recall = float(found[high].mean()) if high.any() else float("nan")
    false_pos = float(found[low].mean()) if low.any() else float("nan")
    return recall, false_pos, int(high.sum()), int(low.sum())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=256)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--scheme", choices=("oph", "kperm"), default="oph")
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    config = MinHashConfig(
        ngram=args.ngram, num_perm=args.num_perm, threshold=args.threshold,
        verify=not args.no_verify, scheme=args.scheme,
    )  # fmt: skip
    result = evaluate(synthetic_pairs(args.pairs, args.seed), config)
    bands, rows = band_layout(config)
    print(f"{args.pairs} pairs, {config.num_perm} hashes ({config.scheme}), {bands} bands x "
          f"{rows} rows, threshold {config.threshold}, verify {config.verify}")  # fmt: skip
    similarity, found = result["similarity"], result["found"]
    edges = np.arange(0.3, 1.0001, 0.05)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (similarity >= lo) & (similarity < hi + (1e-9 if hi >= 1.0 else 0))
        if sel.any():
            print(
                f"  J in [{lo:.2f}, {hi:.2f}): {sel.sum():5d} pairs, found {found[sel].mean():.3f}"
            )
    recall, false_pos, n_high, n_low = rates(result, config.threshold)
    print(f"recall (J >= {config.threshold + 0.05:.2f}, {n_high} pairs) = {recall:.4f}")
    print(f"false positives (J < {config.threshold - 0.1:.2f}, {n_low} pairs) = {false_pos:.4f}")
    print(f"signatures {result['mb'] / result['signature_seconds']:.1f} MB/s; band merges (key "
          f"ranges of 16 KiB)+verification+components {result['group_seconds']:.2f}s; "
          f"counts {result['counts']}")  # fmt: skip
    ok = recall >= 0.95 and false_pos <= 0.01
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
