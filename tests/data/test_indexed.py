"""The MMIDIDX writer, read back by megatron-core's IndexedDataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.data import indexed
from megatron_dscoder.data.indexed import (
    EmptyOutputError,
    IndexedDatasetWriter,
    token_dtype,
)
from tests.preprocess.preprocess_helpers import read_documents


def test_token_dtype_rule() -> None:
    assert token_dtype(32022) is np.uint16 and token_dtype(65499) is np.uint16
    assert token_dtype(65500) is np.int32 and token_dtype(102400) is np.int32


@pytest.mark.parametrize(("dtype", "chunk"), [(np.uint16, 1 << 20), (np.int32, 3)])
def test_megatron_reads_what_we_write(
    tmp_path: Path, dtype: type, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexed, "_CHUNK", chunk)  # 3: the index is streamed in many chunks
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 60000, size=n).astype(dtype) for n in (5, 1, 300, 17)]
    prefix = tmp_path / "data"
    writer = IndexedDatasetWriter(str(prefix), dtype)
    writer.add(np.concatenate(docs[:2]), np.array([5, 1]))
    writer.add(np.concatenate(docs[2:]), np.array([300, 17]))
    assert not prefix.with_suffix(".bin").exists(), "final names appear only at finalize"
    writer.finalize()
    read = read_documents(prefix)
    assert [d.dtype for d in read] == [np.dtype(dtype)] * 4
    assert all(np.array_equal(a, b) for a, b in zip(read, docs, strict=True))
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))
    assert dataset.document_indices.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(dataset.get(2, offset=10, length=5), docs[2][10:15])
    assert sorted(os.listdir(tmp_path)) == ["data.bin", "data.idx"]


def test_replaces_an_old_pair_and_cleans_up_on_abort(tmp_path: Path) -> None:
    prefix = tmp_path / "data"
    for value in (1, 2):
        writer = IndexedDatasetWriter(str(prefix), np.uint16)
        writer.add(np.full(3, value, np.uint16), np.array([3]))
        writer.finalize()
    assert read_documents(prefix)[0].tolist() == [2, 2, 2]
    with IndexedDatasetWriter(str(prefix), np.uint16) as writer:
        writer.add(np.full(3, 9, np.uint16), np.array([3]))
        writer.abort()
    assert read_documents(prefix)[0].tolist() == [2, 2, 2]
    with pytest.raises(ValueError):
        IndexedDatasetWriter(str(tmp_path / "x"), np.uint16).add(
            np.zeros(3, np.uint16), np.array([2])
        )
    empty = IndexedDatasetWriter(str(tmp_path / "empty"), np.uint16)
    with pytest.raises(EmptyOutputError):
        empty.finalize()
    assert sorted(p for p in os.listdir(tmp_path) if not p.startswith("x.")) == [
        "data.bin",
        "data.idx",
    ]


def _write(prefix: Path, docs: list[list[int]]) -> None:
    writer = IndexedDatasetWriter(str(prefix), np.uint16)
    writer.add(np.concatenate([np.array(d) for d in docs]), np.array([len(d) for d in docs]))
    writer.finalize()


def test_reader_and_checks_agree_with_the_writer(tmp_path: Path) -> None:
    prefix = tmp_path / "data"
    _write(prefix, [[1, 2, 3], [4], [5, 6]])
    tokens, lengths = indexed.read_documents(str(prefix))
    assert tokens.tolist() == [1, 2, 3, 4, 5, 6] and lengths.tolist() == [3, 1, 2]
    assert indexed.check_prefix(str(prefix), vocab_size=7) == 3
    with pytest.raises(indexed.DataError, match="does not fit the tokenizer's 6 tokens"):
        indexed.check_prefix(str(prefix), vocab_size=6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.with_suffix(".bin").unlink(), "missing"),
        (lambda p: p.with_suffix(".idx").write_bytes(b"MMIDIDX"), "bad header"),
        (lambda p: _truncate(p.with_suffix(".idx"), 40), "truncated"),
        (lambda p: _truncate(p.with_suffix(".bin"), 10), "truncated"),
        (lambda p: _append(p.with_suffix(".bin"), b"\0\0"), "different runs"),
    ],
)
def test_check_prefix_names_the_damaged_file(tmp_path: Path, damage, message: str) -> None:
    prefix = tmp_path / "data"
    _write(prefix, [[1, 2, 3], [4], [5, 6]])
    damage(prefix)
    with pytest.raises(indexed.DataError, match=message) as err:
        indexed.check_prefix(str(prefix), vocab_size=7)
    assert str(tmp_path) in str(err.value)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _racing_writer(prefix: str, writer_id: int, rounds: int, barrier, results) -> None:
    """Writer ``writer_id``: in every round, finalise (all writers at once) then check."""
    for r in range(rounds):
        writer = IndexedDatasetWriter(prefix, np.uint16)
        value = 1 + writer_id
        lengths = np.full(1 + writer_id, 2 + writer_id)  # sizes differ between writers
        writer.add(np.full(int(lengths.sum()), value, np.uint16), lengths)
        barrier.wait(timeout=30)
        try:
            writer.finalize()
        except OSError:  # e.g. the old .idx removed by another writer in between
            results.put((r, False))
        barrier.wait(timeout=30)
        if writer_id == 0:
            try:
                indexed.check_prefix(prefix, vocab_size=16)
                tokens, lens = indexed.read_documents(prefix)
                owner = int(tokens[0]) - 1
                ok = set(tokens.tolist()) == {owner + 1} and lens.tolist() == [2 + owner] * (
                    1 + owner
                )
            except indexed.DataError:
                ok = False
            results.put((r, ok))
        barrier.wait(timeout=30)


def test_concurrent_writers_of_one_prefix_never_mix_their_files(tmp_path: Path) -> None:
    """Item 6: four processes finalise the same prefix at the same moment, 60 rounds."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    writers, rounds = 4, 60
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    prefix = str(tmp_path / "data")
    procs = [
        ctx.Process(target=_racing_writer, args=(prefix, i, rounds, barrier, results))
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    outcomes = []
    while not results.empty():
        outcomes.append(results.get())
    assert len(outcomes) >= rounds
    bad = [r for r, ok in outcomes if not ok]
    assert not bad, f"{len(bad)} of {rounds} rounds left a mixed or broken pair"
    assert sorted(os.listdir(tmp_path)) == ["data.bin", "data.idx"]  # no lock or temp left
