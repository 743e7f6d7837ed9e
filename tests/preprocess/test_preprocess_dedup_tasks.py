"""The dedup tasks against an in-memory reference: bands merged per key range, pairs verified
once, components over unique pairs — the same samples dropped however the work is cut."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.preprocess.dedup import (
    band_file,
    band_ranges,
    band_records,
    candidate_pairs,
    dropped_samples,
    save_array,
    shard_file,
    unique_pairs,
    write_band_file,
)
from megatron_dscoder.preprocess.dedup_tasks import (
    SUBDIRS,
    BandTask,
    ComponentsTask,
    Producers,
    components,
    dedup_dir,
    merge_band,
    verify_range,
    verify_tasks,
)
from megatron_dscoder.preprocess.minhash import MinHashConfig, estimated_jaccard, signatures
from megatron_dscoder.preprocess.options import PreprocessConfig
from megatron_dscoder.preprocess.stages import StageConfig
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
    bands, _ = CONFIG.band_layout()
    signed = [band_records(s, signatures(texts, CONFIG), CONFIG) for s, texts in enumerate(shards)]
    ids = np.concatenate([i for i, _ in signed])
    keys = np.concatenate([k for _, k in signed])
    sig = np.concatenate([signatures(texts, CONFIG) for texts in shards])
    row = {int(i): n for n, i in enumerate((s << 32) | p for s, t in enumerate(shards)
                                          for p in range(len(t)))}  # fmt: skip
    pairs = unique_pairs(np.concatenate([candidate_pairs(keys[:, b], ids) for b in range(bands)]))
    similar = estimated_jaccard(sig[[row[int(a)] for a in pairs[:, 0]]],
                                sig[[row[int(b)] for b in pairs[:, 1]]])  # fmt: skip
    verified = pairs[similar >= CONFIG.threshold]
    return dropped_samples(verified, first_repo_shard=len(shards))[0], len(pairs)


def run_tasks(work: Path, shards: list[list[str]], key_ranges: int, verifiers: int) -> dict:
    options = PreprocessConfig(inputs=("-",), tokenizer_model="-", output_prefix="-", dedup=CONFIG)
    stage = StageConfig(options, eos=0, dtype="uint16", buckets=16, work_dir=str(work))
    for sub in SUBDIRS:
        os.makedirs(dedup_dir(str(work), sub), exist_ok=True)
    bands = CONFIG.band_layout()[0]
    for shard, texts in enumerate(shards):
        sig = signatures(texts, CONFIG)
        save_array(shard_file(str(work), shard, "sig"), sig)
        write_band_file(band_file(str(work), f"p2-{shard:010d}"), [band_records(shard, sig, CONFIG)],
                        bands)  # fmt: skip
    producers = Producers(0, 0, len(shards))
    merged = [merge_band(BandTask(b, key_ranges, producers), stage) for b in range(bands)]
    tasks = verify_tasks(list(range(len(shards))), verifiers, bands, key_ranges)
    verified = [verify_range(task, stage) for task in tasks]
    counts = components(ComponentsTask(len(tasks), len(shards)), stage)
    return {
        "dropped_ids": np.load(dedup_dir(str(work), "dropped.npy")),
        "records": sum(m["records"] for m in merged),
        "candidates": sum(m["candidates"] for m in merged),
        "unique": sum(v["unique"] for v in verified),
        **counts,
    }


@pytest.mark.parametrize(("key_ranges", "verifiers"), [(1, 1), (4, 3)])
def test_tasks_drop_what_the_reference_drops(
    tmp_path: Path, key_ranges: int, verifiers: int
) -> None:
    shards = corpus()
    expected, unique = reference(shards)
    got = run_tasks(tmp_path, shards, key_ranges, verifiers)
    assert expected.size >= 20 and np.array_equal(got["dropped_ids"], expected)
    samples = sum(len(s) for s in shards) - 1  # the text without words has no signature
    assert got["records"] == samples * CONFIG.band_layout()[0]
    # A pair shared by several bands is verified once: the verifiers see each pair once.
    assert got["unique"] == unique < got["candidates"]
    assert got["verified_pairs"] <= unique
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
