"""The disk shuffle: serialisation, buckets, bounded regions."""

from __future__ import annotations

import os
from pathlib import Path

from megatron_dscoder.preprocess.records import Record
from megatron_dscoder.preprocess.repo.spill import (
    SpillWriter,
    bucket_of,
    decode_records,
    partition_records,
    plan_regions,
    read_region,
)


def records(repos: int, files: int, size: int = 100) -> list[Record]:
    return [
        Record("é" + "x" * size, f"org/r{r}", f"d/{f}.py", "python")
        for r in range(repos)
        for f in range(files)
    ]


def test_roundtrip_and_stable_buckets() -> None:
    recs = records(5, 3)
    parts = partition_records(recs, 4)
    assert sorted(decode_records(b"".join(parts.values())), key=lambda r: (r.repo, r.path)) == recs
    for bucket, blob in parts.items():
        assert {bucket_of(r.repo.encode(), 4) for r in decode_records(blob)} == {bucket}
    names = [f"org/r{i}".encode() for i in range(200)]
    assert [bucket_of(n, 16) for n in names] == [bucket_of(n, 16) for n in names]
    assert len({bucket_of(n, 16) for n in names}) == 16
    # a re-split uses an independent hash: one bucket's repositories spread over sub-buckets
    same = [n for n in names if bucket_of(n, 16) == 0]
    assert len({bucket_of(n, 16, depth=1) for n in same}) > 1


def write_bucket(tmp_path: Path, recs: list[Record]) -> str:
    writer = SpillWriter(str(tmp_path), buffer_bytes=500)
    for blob in partition_records(recs, 1).values():
        writer.add(0, blob)
    writer.flush()
    return writer.path(0)


def test_big_bucket_is_resplit_keeping_repositories_whole(tmp_path: Path) -> None:
    recs = records(30, 4)
    path = write_bucket(tmp_path, recs)
    stats: dict[str, int] = {}
    regions = list(plan_regions(path, 2000, stats=stats))
    assert stats.get("spill_resplits", 0) >= 1 and "oversize_repo_windows" not in stats
    assert all(r.end - r.start <= 2000 for r in regions)
    seen: dict[str, int] = {}
    for i, region in enumerate(regions):
        for rec in read_region(region):
            assert seen.setdefault(rec.repo, i) == i, "a repository was split across regions"
    assert len(seen) == 30 and not os.path.exists(path)


def test_one_huge_repository_is_windowed(tmp_path: Path) -> None:
    recs = records(1, 40)
    path = write_bucket(tmp_path, recs)
    stats: dict[str, int] = {}
    regions = list(plan_regions(path, 1000, stats=stats))
    assert stats == {"oversize_repo_windows": 1}
    assert len(regions) > 1 and all(r.windowed and r.end - r.start <= 1000 for r in regions)
    assert [rec for r in regions for rec in read_region(r)] == recs


def test_one_large_repository_stays_whole_up_to_max_bytes(tmp_path: Path) -> None:
    recs = records(1, 40)  # ~4.4 kB, one repository
    path = write_bucket(tmp_path, recs)
    stats: dict[str, int] = {}
    [region] = plan_regions(path, 1000, max_bytes=10_000, stats=stats)
    assert not region.windowed and stats == {} and read_region(region) == recs
