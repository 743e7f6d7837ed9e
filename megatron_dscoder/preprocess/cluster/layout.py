"""The work directory of a run: every path in it, every task name, and the one way to write a file.

Tasks of a run share one directory (on shared storage with Ray). Each writes only its own
files, under a temporary name renamed when complete (:func:`atomic_write`), so a file that
exists is whole; :meth:`.workdir.WorkDir.sweep_temporaries` removes what killed attempts left
(``*.partial`` files, ``*.tmp-*`` directories). The layout (version :data:`WORK_LAYOUT`)::

    WORK/
      run.json                       what the work is for (kept directories only, :mod:`.workdir`)
      .temporary                     (temporary directories only: a later run may sweep it)
      done/NAME.json                 completion marker of the task NAME, with the size and
                                     checksum of each file it wrote (:mod:`.markers`)
      sNNNNNNN.{tok,len,nf}.npy      a shard's tokens, document lengths, files per document
      sNNNNNNN.sig.npy               its MinHash signatures (with dedup)
      spill/rNNNNNNN                 pass 1: the repository-level records of input reference N,
                                     bucket after bucket
      spill/bNNNNN.d/                pass 2a: a large bucket joined, then cut into regions
      dedup/bands/p1-NNNNNNN.npy     band file of a pass-1 task (all its shards)
      dedup/bands/p2-NNNNNNNNNN.npy  band file of a pass-2 task (its shard)
      dedup/pairs/bBBB-RRRRR.npy     star pairs of band BBB, key range RRRRR
      dedup/verified/vVVVVV.npy      verified pairs whose smaller id is in range V
      dedup/dropped.npy              the sorted sample ids to drop
      shards/shard-NNNNNNN.bin/.idx  a finalised shard (near-duplicates dropped)

A task's name is ``KIND-NUMBER[...]`` (``pass1-0000003``); its kind is the key under which the
stats JSON counts tasks ran and skipped (``tasks``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from megatron_dscoder.preprocess.cluster import integrity

#: The version of what tasks write in a work directory (2: one band file per task, the dedup
#: by band; 3: checksums in the markers, inputs' sizes and times in ``run.json``); a kept
#: directory of another version is refused, not half reused.
WORK_LAYOUT = 3
#: The sub-directories every run creates before its first task.
SUBDIRS = ("shards", "spill", "done", "dedup/bands", "dedup/pairs", "dedup/verified")
#: The suffix of a file being written (swept when a kept directory is reused).
PARTIAL = ".partial"


def make_dirs(work_dir: str) -> None:
    for sub in SUBDIRS:
        os.makedirs(os.path.join(work_dir, sub), exist_ok=True)


# ---- writing ----


def atomic_write(path: str, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """``write(f)`` into ``PATH.PID.partial``, then renamed to ``path``: readers (a retried
    task, a rerun) never see half a file. A binary file is digested as it is written, for the
    running task's marker (:mod:`.integrity`). An error of the file system (a full disk) names
    the file."""
    partial = f"{path}.{os.getpid()}{PARTIAL}"
    try:
        with open(partial, mode) as f:
            if "b" not in mode:
                write(f)
            else:
                hashing = integrity.HashingWriter(f)
                write(hashing)  # type: ignore[arg-type]
        os.replace(partial, path)
    except OSError as err:
        if err.filename is None:
            err.filename = path
        raise
    if "b" in mode:
        integrity.record(path, hashing.size, hashing.hash.hexdigest())


def save_array(path: str, array: np.ndarray) -> None:
    """``np.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: np.save(f, array))


# ---- task names ----


def task_name(kind: str, number: int, width: int, *rest: str) -> str:
    """``KIND-NUMBER`` (zero-padded to ``width``), then ``-REST`` parts."""
    return "-".join((kind, f"{number:0{width}d}", *rest))


def task_kind(name: str) -> str:
    """The kind of the task ``name`` (its stats key): ``pass1-0000003`` -> ``pass1``."""
    return name.split("-", 1)[0]


def pass1_task(ref: int) -> str:
    return task_name("pass1", ref, 7)


def plan_task(bucket: int) -> str:
    return task_name("plan", bucket, 5)


def pass2_task(shard: int) -> str:
    return task_name("pass2", shard, 10)


def finalize_task(first_shard: int) -> str:
    return task_name("finalize", first_shard, 10)


def band_task(band: int, key_ranges: int) -> str:
    return task_name("band", band, 3, "of", f"{key_ranges:05d}")


def verify_task(index: int, count: int) -> str:
    return task_name("verify", index, 5, "of", f"{count:05d}")


def components_task(verifies: int) -> str:
    return task_name("components", verifies, 5)


# ---- paths ----


def marker_path(work_dir: str, name: str) -> str:
    return os.path.join(work_dir, "done", f"{name}.json")


def shard_file(work_dir: str, shard: int, kind: str) -> str:
    """Path of one of a shard's work files (``tok``, ``len``, ``nf``, ``sig``)."""
    return os.path.join(work_dir, f"s{shard:07d}.{kind}.npy")


def shard_prefix(work_dir: str, index: int) -> str:
    """The finalised shard dataset (``.bin``/``.idx``)."""
    return os.path.join(shards_dir(work_dir), f"shard-{index:07d}")


def shards_dir(work_dir: str) -> str:
    return os.path.join(work_dir, "shards")


def spill_dir(work_dir: str) -> str:
    return os.path.join(work_dir, "spill")


def spill_file(work_dir: str, ref: int) -> str:
    """The spill file of input reference ``ref`` (pass 1)."""
    return os.path.join(spill_dir(work_dir), spill_name(ref))


def spill_name(ref: int) -> str:
    return f"r{ref:07d}"


def bucket_name(bucket: int) -> str:
    """A large bucket's joined file; its directory is ``spill/NAME.d``."""
    return f"b{bucket:05d}"


def pass1_bands(ref: int) -> str:
    """The band-file name of the pass-1 task of reference ``ref``."""
    return f"p1-{ref:07d}"


def pass2_bands(shard: int) -> str:
    """The band-file name of the pass-2 task of ``shard``."""
    return f"p2-{shard:010d}"


def dedup_dir(work_dir: str, *parts: str) -> str:
    return os.path.join(work_dir, "dedup", *parts)


def band_file(work_dir: str, task: str) -> str:
    """The band file of a task (:func:`pass1_bands`, :func:`pass2_bands`)."""
    return dedup_dir(work_dir, "bands", f"{task}.npy")


def pairs_file(work_dir: str, band: int, key_range: int) -> str:
    return dedup_dir(work_dir, "pairs", f"b{band:03d}-{key_range:05d}.npy")


def verified_file(work_dir: str, index: int) -> str:
    return dedup_dir(work_dir, "verified", f"v{index:05d}.npy")


def dropped_file(work_dir: str) -> str:
    return dedup_dir(work_dir, "dropped.npy")
