"""FIM decisions and layouts."""

from __future__ import annotations

from collections import Counter

from megatron_dscoder.preprocess.records import Sample
from megatron_dscoder.preprocess.stages.fim import FimConfig, apply_fim, draw, fim_pieces

IDS = {"begin": 100, "hole": 101, "end": 102}


def test_psm_layout_and_lossless_cut() -> None:
    config = FimConfig(rate=1.0, spm_rate=0.0, seed=3, **IDS)
    text = "def f(x):\n    return x * 2\n"
    pieces, mode = fim_pieces(text, "repo\x00a.py", config)
    assert mode == "psm"
    begin, prefix, hole, suffix, end, middle = pieces
    assert (begin, hole, end) == (100, 101, 102)
    assert prefix + middle + suffix == text


def test_spm_layout() -> None:
    pieces, mode = fim_pieces("abcdef", "k", FimConfig(rate=1.0, spm_rate=1.0, seed=0, **IDS))
    assert mode == "spm"
    begin, hole, suffix, end, prefix, middle = pieces
    assert (begin, hole, end) == (100, 101, 102) and prefix + middle + suffix == "abcdef"


def test_draws_depend_on_seed_and_key_only() -> None:
    config = FimConfig(rate=0.5, spm_rate=0.0, seed=1, **IDS)
    assert draw("k1", 50, config) == draw("k1", 50, config)
    keys = [f"repo\x00file{i}.py" for i in range(400)]
    seeds = {
        s: [draw(k, 50, FimConfig(rate=0.5, spm_rate=0.0, seed=s)).apply for k in keys]
        for s in (1, 2)
    }
    assert seeds[1] != seeds[2]
    cuts = [draw(k, 50, config) for k in keys]
    assert all(0 <= c.cut_a <= c.cut_b <= 50 for c in cuts)
    assert {c.cut_a for c in cuts} >= {0, 1, 2} and max(c.cut_b for c in cuts) == 50


def test_rates() -> None:
    samples = [Sample(f"k{i}", "some text\n" * 3, "r", ("p",), "python") for i in range(4000)]
    counts: Counter[str] = Counter()
    apply_fim(samples, FimConfig(rate=0.5, spm_rate=0.25, seed=0, **IDS), counts)
    assert abs(counts["psm"] + counts["spm"] - 2000) < 150
    assert abs(counts["spm"] - 500) < 80
    none: Counter[str] = Counter()
    docs = apply_fim(samples[:10], FimConfig(rate=0.0, spm_rate=0.0, seed=0, **IDS), none)
    assert docs == [[s.text] for s in samples[:10]] and none == Counter(plain=10)
