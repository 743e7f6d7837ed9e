"""The output of a run, written by tasks: one merged ``PREFIX.bin/.idx``, or parts and a manifest.

By default one merge task concatenates the finalised shards, in order, into the output pair (on
a cluster it runs on a worker: the driver moves no bytes). With ``--output-shard-mb N``
consecutive shards are grouped into parts of about N MB, merged by one task each (in parallel),
into ``PREFIX.parts/part-NNNNN.bin/.idx`` listed, with their tokens, in
``PREFIX.parts/manifest.json`` (:mod:`megatron_dscoder.data.manifest`; each part's sizes and
checksums come back from its task, the ``.bin`` hashed as it was written), which training takes as
``--data-path PREFIX.parts/manifest.json``: a blend weighted by tokens. ``--keep-shards`` also
keeps the per-shard datasets in ``PREFIX.shards/``. What an earlier run wrote at the prefix in
the other form (the pair, or parts and a manifest) is removed once the output is complete, so
no script reads stale data under the old name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil

import numpy as np

from megatron_dscoder.data.indexed import EmptyOutputError
from megatron_dscoder.data.manifest import write_manifest
from megatron_dscoder.data.prefix import prefix_lock
from megatron_dscoder.preprocess.cluster.engine import Engine
from megatron_dscoder.preprocess.cluster.layout import shards_dir
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.stages.base import WorkerContext
from megatron_dscoder.preprocess.tasks.shards import MergeTask, merge_group

logger = logging.getLogger(__name__)


def write_output(
    config: PreprocessConfig,
    ctx: WorkerContext,
    engine: Engine,
    kept: list[tuple[int, int]],
    work_kept: bool,
) -> tuple[EmptyOutputError | None, int]:
    """PREFIX.bin/.idx (or the parts and their manifest) by merge tasks, from the finalised
    ``(shard, tokens)`` in order; (None, or the error of an empty output; parts written)."""
    if not kept:
        return EmptyOutputError(f"no documents to write to {config.output_prefix}.bin"), 0
    if config.part_bytes <= 0:
        groups = [[index for index, _ in kept]]
    else:
        itemsize = np.dtype(ctx.dtype).itemsize
        limit, groups, size = config.part_bytes, [[]], 0
        for index, tokens in kept:
            if size >= limit:
                groups.append([])
                size = 0
            groups[-1].append(index)
            size += tokens * itemsize
    tokens_of = dict(kept)
    parts_dir = f"{config.output_prefix}.parts"
    if config.part_bytes > 0:
        os.makedirs(parts_dir, exist_ok=True)
        tasks = [
            MergeTask(tuple(g), os.path.join(parts_dir, f"part-{j:05d}"), part=True)
            for j, g in enumerate(groups)
        ]
    else:
        tasks = [MergeTask(tuple(groups[0]), config.output_prefix)]
    manifest = os.path.join(parts_dir, "manifest.json")
    if config.part_bytes > 0:
        with contextlib.suppress(FileNotFoundError):
            os.remove(manifest)  # an earlier run's: it stops describing the parts replaced now
    entries = dict(engine.map_unordered(merge_group, tasks))
    if config.part_bytes > 0:
        parts = [entries[task] for task in tasks]
        for task, part in zip(tasks, parts, strict=True):
            expected = sum(tokens_of[i] for i in task.shards)
            if part is None or part.tokens != expected:
                raise RuntimeError(f"{task.prefix}: {part} written, {expected} tokens expected")
        write_manifest(manifest, str(np.dtype(ctx.dtype)), parts)
    written = {os.path.basename(t.prefix) for t in tasks} if config.part_bytes > 0 else set()
    _remove_stale(config.output_prefix, parts_dir, written)
    if config.keep_shards:
        _keep_shards(ctx.work_dir, f"{config.output_prefix}.shards", work_kept)
    return None, len(tasks) if config.part_bytes > 0 else 0


_PART = re.compile(r"part-\d{5}\.(bin|idx)")


def _remove_stale(prefix: str, parts_dir: str, written: set[str]) -> None:
    """Remove what earlier runs of this prefix wrote and this one did not: the pair when this
    run wrote parts, parts beyond this run's, the parts when it wrote the pair. A training
    script naming the other form then fails instead of reading old data."""
    removed = []
    if written:
        with prefix_lock(prefix):
            for suffix in (".idx", ".bin"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(prefix + suffix)
                    removed.append(prefix + suffix)
    if os.path.isdir(parts_dir):
        for name in sorted(os.listdir(parts_dir)):
            if _PART.fullmatch(name) and name.rsplit(".", 1)[0] not in written:
                os.remove(os.path.join(parts_dir, name))
                removed.append(os.path.join(parts_dir, name))
        if not written:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(parts_dir, "manifest.json"))
                removed.append(os.path.join(parts_dir, "manifest.json"))
            with contextlib.suppress(OSError):
                os.rmdir(parts_dir)  # only when nothing else is in it
    if removed:
        logger.info(
            "removed %d files an earlier run wrote at this prefix: %s",
            len(removed),
            ", ".join(removed[:4]) + (" ..." if len(removed) > 4 else ""),
        )


def _keep_shards(work_dir: str, target: str, work_kept: bool) -> None:
    """The shard datasets next to the output: moved, or hard-linked from a kept work dir."""
    shutil.rmtree(target, ignore_errors=True)
    source = shards_dir(work_dir)
    if not work_kept:
        os.replace(source, target)
        return
    os.makedirs(target)
    for name in sorted(os.listdir(source)):
        try:
            os.link(os.path.join(source, name), os.path.join(target, name))
        except OSError:
            shutil.copy2(os.path.join(source, name), os.path.join(target, name))
