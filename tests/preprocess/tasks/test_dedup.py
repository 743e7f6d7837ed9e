"""The dedup tasks (on the local engine) against an in-memory reference: bands merged per key
range, pairs verified once, components over unique pairs — the same samples dropped however
the work is cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.preprocess.dedup import (
    band_ranges,
    band_records,
    candidate_pairs,
    dropped_samples,
    unique_pairs,
)
from megatron_dscoder.preprocess.stages.minhash import (
    MinHashConfig,
    band_layout,
    estimated_jaccard,
    signatures,
)
from megatron_dscoder.preprocess.tasks.dedup import deduplicate_shards
from tests.conftest import stdlib_texts

CONFIG = MinHashConfig(threshold=0.6)


def corpus() -> list[list[str]]:
    """Shards of real code with near-copies spread over them (and a text without words)."""
    texts = [t[i : i + 3000] for t in stdlib_texts() for i in range(0, len(t) - 3000, 3000)][:60]
    rng = np.random.default_rng(0)
    copies = []
    for i in rng.choice(len(texts), size=25, replace=False).tolist():
        words = texts[i].split(" ")
        for j in rng.integers(0, len(words), size=max(1, len(words) // 40)).tolist():
            words[j] = "edited"
        copies.append(" ".join(words))
    mixed = texts + copies + texts[:5] + ["  ...  "]
    order = rng.permutation(len(mixed)).tolist()
    shuffled = [mixed[i] for i in order]
    return [shuffled[i : i + 9] for i in range(0, len(shuffled), 9)]


def reference(shards: list[list[str]]) -> tuple[np.ndarray, int]:
    """Dropped ids computed in one place: every band's star pairs, verified, components."""
    bands, _ = band_layout(CONFIG)
    sigs = [signatures(texts, CONFIG) for texts in shards]
    signed = [band_records(s, sig, CONFIG) for s, sig in enumerate(sigs)]
    ids = np.concatenate([i for i, _ in signed])
    keys = np.concatenate([k for _, k in signed])
    sig = np.concatenate(sigs)
    row = {
        int(i): n
        for n, i in enumerate((s << 32) | p for s, t in enumerate(shards) for p in range(len(t)))
    }
    pairs = unique_pairs(np.concatenate([candidate_pairs(keys[:, b], ids) for b in range(bands)]))
    similar = estimated_jaccard(
        sig[[row[int(a)] for a in pairs[:, 0]]], sig[[row[int(b)] for b in pairs[:, 1]]]
    )
    verified = pairs[similar >= CONFIG.threshold]
    return dropped_samples(verified, first_repo_shard=len(shards))[0], len(pairs)


@pytest.mark.parametrize("group_bytes", [1 << 30, 1 << 9])
def test_tasks_drop_what_the_reference_drops(tmp_path: Path, group_bytes: int) -> None:
    shards = corpus()
    expected, unique = reference(shards)
    sigs = [signatures(texts, CONFIG) for texts in shards]
    dropped, counts = deduplicate_shards(str(tmp_path), sigs, CONFIG, group_bytes, workers=2)
    cut = group_bytes < 1 << 20
    assert (counts["key_ranges"] > 1, counts["verify_tasks"] > 1) == (cut, cut), counts
    assert expected.size >= 20 and np.array_equal(dropped, expected)
    samples = sum(len(s) for s in shards) - 1  # the text without words has no signature
    assert counts["band_records"] == samples * band_layout(CONFIG)[0]
    # A pair shared by several bands is verified once: the verifiers see each pair once.
    assert counts["unique_candidate_pairs"] == unique < counts["candidate_pairs"]
    assert counts["verified_pairs"] <= unique and counts["dropped"] == expected.size
    assert not list(tmp_path.glob("dedup/*.tmp-*")), "scratch files are removed"


def test_key_ranges_cover_each_record_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    files = []
    for t in range(3):
        keys = rng.integers(0, 2**64, size=(2, 50), dtype=np.uint64)
        ids = np.arange(50, dtype=np.uint64) + np.uint64(t << 32)
        out = np.stack([np.stack([np.sort(k), ids]) for k in keys])  # (bands=2, 2, 50)
        files.append(str(tmp_path / f"t{t}.npy"))
        np.save(files[-1], out)
    whole = list(band_ranges(files, 1, 1, str(tmp_path)))
    cut = list(band_ranges(files, 1, 5, str(tmp_path)))
    assert len(whole) == 1 and len(cut) == 5
    keys = np.concatenate([k for k, _ in cut])
    assert np.array_equal(np.sort(keys), np.sort(whole[0][0])) and keys.size == 150
    assert all(np.all(k[:, None] < cut[i + 1][0][None, :]) for i, (k, _) in enumerate(cut[:-1]))
