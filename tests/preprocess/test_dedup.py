"""Near-dedup and decontamination units: grams, signatures, the group-by, components, benchmarks."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.preprocess.config import parse_benchmark
from megatron_dscoder.preprocess.dedup import candidate_pairs, component_roots
from megatron_dscoder.preprocess.stages.decontam import (
    BenchmarkSpec,
    DecontamConfig,
    benchmark_strings,
    contaminated,
    humaneval_path,
)
from megatron_dscoder.preprocess.stages.minhash import (
    MinHashConfig,
    band_layout,
    candidate_probability,
    estimated_jaccard,
    exact_jaccard,
    ngram_hashes,
    signatures,
    word_hashes,
)

REPO = Path(__file__).resolve().parents[2]


def load_bench_dedup() -> object:  # the benchmark script, imported as a module
    spec = importlib.util.spec_from_file_location(
        "bench_dedup", REPO / "benchmarks" / "bench_dedup.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_words_ignore_case_spacing_and_punctuation() -> None:
    words, text_of = word_hashes(["def Foo(x):\n    return x+1\n", "def  foo( x ) :return X + 1"])
    assert words.size == 12 and text_of.tolist() == [0] * 6 + [1] * 6
    assert words[:6].tolist() == words[6:].tolist()
    other, _ = word_hashes(["def foo_(x): return x+1"])
    assert other[1] != words[1]  # foo_ is a different word


def test_word_hashes_do_not_depend_on_the_partition() -> None:
    text = "alpha beta\ngamma " * 50_000  # over one hashing chunk
    alone, _ = word_hashes([text])
    words, text_of = word_hashes(["x y z", text, "q"])
    assert np.array_equal(words[text_of == 1], alone)


def test_ngrams_stay_inside_each_text_and_tiny_texts_get_one() -> None:
    words, text_of = word_hashes(["a b c d e f", "g h", "i j k l m"])
    grams, owners = ngram_hashes(words, text_of, 5)
    assert Counter(owners.tolist()) == {0: 2, 1: 1, 2: 1}
    strict, owners = ngram_hashes(words, text_of, 5, short=False)
    assert Counter(owners.tolist()) == {0: 2, 2: 1}


def test_signature_agreement_estimates_jaccard() -> None:
    rng = np.random.default_rng(1)
    base = [f"w{int(i)}" for i in rng.integers(0, 10**6, size=2000)]
    edited = list(base)
    for position in rng.choice(2000, size=60, replace=False):
        edited[position] = "changed"
    a, b = " ".join(base), " ".join(edited)
    truth = exact_jaccard(a, b)
    for scheme in ("oph", "kperm"):
        sig = signatures(
            [a, b, "unrelated words only here and there"], MinHashConfig(scheme=scheme)
        )
        assert abs(float(estimated_jaccard(sig[0], sig[1])) - truth) < 0.06, scheme
        assert float(estimated_jaccard(sig[0], sig[2])) < 0.05
    assert 0.6 < truth < 0.9


def test_identical_texts_have_identical_signatures_wherever_they_are() -> None:
    text = "int main(void) { return compute(argc, argv); }\n"
    sig = signatures(["x " * 30, text, "y z"], MinHashConfig())
    alone = signatures([text], MinHashConfig())
    assert np.array_equal(sig[1], alone[0])
    assert band_layout(MinHashConfig())[0] * band_layout(MinHashConfig())[1] <= 256


def test_default_bands_find_pairs_above_the_threshold() -> None:
    bands, rows = band_layout(MinHashConfig())
    assert candidate_probability(0.75, bands, rows) > 0.99
    assert candidate_probability(0.3, bands, rows) < 0.01


def test_star_candidates_and_components_are_deterministic() -> None:
    keys = np.array([5, 5, 5, 9, 9, 7], dtype=np.uint64)
    ids = np.array([30, 10, 20, 20, 40, 50], dtype=np.uint64)
    assert candidate_pairs(keys, ids).tolist() == [[10, 20], [10, 30], [20, 40]]
    pairs = np.array([[10, 20], [20, 40], [60, 70], [30, 60]], dtype=np.uint64)
    nodes, roots = component_roots(pairs[::-1])
    assert dict(zip(nodes.tolist(), roots.tolist(), strict=True)) == {
        10: 10,
        20: 10,
        40: 10,
        30: 30,
        60: 30,
        70: 30,
    }


def test_recall_and_false_positives_on_synthetic_pairs() -> None:
    bench = load_bench_dedup()
    config = MinHashConfig()
    result = bench.evaluate(bench.synthetic_pairs(600, seed=3), config)
    recall, false_pos, n_high, n_low = bench.rates(result, config.threshold)
    assert n_high > 100 and n_low > 200
    assert recall >= 0.95 and false_pos <= 0.01, (recall, false_pos)


def humaneval_problem(index: int) -> dict:
    with gzip.open(humaneval_path(), "rt") as f:
        return [json.loads(line) for line in f][index]


def test_humaneval_prompt_or_solution_is_found_but_ordinary_code_is_not() -> None:
    problem = humaneval_problem(10)
    texts = [
        "import sys\n\n" + problem["prompt"] + problem["canonical_solution"] + "\nprint(1)\n",
        problem["prompt"].upper().replace("    ", "\t"),  # case and spacing do not hide it
        "def add(a, b):\n    return a + b\n",
        "values = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n",  # numbers-only windows never match
    ]
    words, text_of = word_hashes(texts)
    hits: Counter[str] = Counter()
    mask = contaminated(words, text_of, len(texts), DecontamConfig(), hits)
    assert mask.tolist() == [True, True, False, False]
    assert hits == {"humaneval": 2}


def test_user_benchmark_files_fields_and_short_strings(tmp_path: Path) -> None:
    bench = tmp_path / "mbpp.jsonl.gz"
    with gzip.open(bench, "wt") as f:
        f.write(
            json.dumps(
                {
                    "text": "Write a function to reverse the words of a sentence.",
                    "code": "x = 1",
                    "id": 7,
                }
            )
            + "\n"
        )
        f.write(json.dumps({"text": "sum the list quickly", "code": "return sum(values)"}) + "\n")
    spec = parse_benchmark(f"{bench}:text")
    assert spec == BenchmarkSpec("mbpp", str(bench), ("text",))
    assert parse_benchmark(str(bench)).fields == ()
    assert len(benchmark_strings(spec)) == 2
    texts = [
        "# write a function to reverse the words of a sentence\ndef f(s): ...\n",  # 10 words
        "print('please SUM the list, quickly!')\n",  # the 4-word string, exactly
        "sum the list slowly\n",  # not the exact sequence
        "return sum(values)\n",  # the code field was not asked for
    ]
    words, text_of = word_hashes(texts)
    hits: Counter[str] = Counter()
    config = DecontamConfig(benchmarks=(spec,))
    assert contaminated(words, text_of, 4, config, hits).tolist() == [True, True, False, False]
    assert hits == {"mbpp": 2}
    with pytest.raises(FileNotFoundError):
        benchmark_strings(parse_benchmark(str(tmp_path / "missing.jsonl")))
