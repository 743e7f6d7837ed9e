"""Completion markers: a finished task leaves ``done/NAME.json`` (its result), so a rerun skips it.

A task's result is small (counts and paths, see :mod:`megatron_dscoder.preprocess.tasks.passes`);
:func:`run_step` writes it under
a temporary name and renames it once the task's own files are in place, so a marker always
means "this task's outputs are complete". :func:`run_steps` hands the steps without a marker to
the engine, unordered (one slow task never holds back the others), and yields the stored
results of the others as skipped; callers apply results by step name, in a fixed order, so
the output does not depend on completion order. A rerun with the same ``--work-dir`` after any
kill therefore redoes only the tasks that had not finished.

A marker also lists the size and checksum of every file its task wrote (:mod:`.integrity`),
and opens with the checksum of its own content; a reused marker is trusted only if all match,
so a damaged work file (a flipped byte, a truncated shard or band file) is rewritten by its task
instead of reaching the output, and a damaged or edited marker counts as none.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from megatron_dscoder.preprocess.cluster import integrity
from megatron_dscoder.preprocess.cluster.engine import Engine
from megatron_dscoder.preprocess.cluster.layout import atomic_write, marker_path, task_kind
from megatron_dscoder.preprocess.cluster.workdir import WorkDirError
from megatron_dscoder.preprocess.stages.base import WorkerContext

logger = logging.getLogger(__name__)
#: Marker keys: the files a task wrote (relative path -> [size, digest]) and, for a pass-1 task
#: of a checkout directory, [source, {repository: state}] of what it read.
FILES, INPUTS = "files", "inputs"
#: How :func:`check_step` says that an input changed (refused, not redone).
CHANGED = "changed: "


@dataclass(frozen=True)
class Step:
    """One task: ``fn(item, config)``, remembered as ``done/{name}.json``."""

    name: str
    fn: Callable[[Any, WorkerContext], dict[str, Any]]
    item: Any


@dataclass
class TaskCounts:
    """Tasks ``ran`` and ``skipped`` per stage (``pass1:ran`` ...), and the work each kind
    stands for: ``seconds["ran"]`` the task seconds of this run, ``seconds["skipped"]`` those
    the skipped tasks took when they ran (from their markers)."""

    counts: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)


def run_step(step: Step, ctx: WorkerContext) -> dict[str, Any]:
    """Run a step on a worker and leave its marker: its result, the seconds it took and the
    size and checksum of every file it wrote (:mod:`.integrity`)."""
    started = time.perf_counter()
    with integrity.recording() as written:
        try:
            result = step.fn(step.item, ctx)
        except OSError as err:
            if err.filename is None and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                err.filename = ctx.work_dir  # a task writes only there
            raise
    result["task_seconds"] = time.perf_counter() - started
    result[FILES] = integrity.relative_files(ctx.work_dir, written)
    body = json.dumps(result, separators=(",", ":")).encode()
    digest = integrity.new_hash()
    digest.update(body)
    marker = digest.hexdigest().encode() + b"\n" + body
    atomic_write(marker_path(ctx.work_dir, step.name), lambda f: f.write(marker))
    return result


def check_step(found: tuple[Step, dict[str, Any]], ctx: WorkerContext) -> str | None:
    """On a worker: None if the files a stored marker lists are intact and the inputs its task
    read unchanged, else why not (a :data:`CHANGED` input, or a damaged file naming it)."""
    step, result = found
    for source, state in result.get(INPUTS, []):
        now = integrity.repos_state(source, tuple(state))
        for repo in (repo for repo in state if now[repo] != state[repo]):
            what = f"repository {repo}" if repo else "the loose files"
            return f"{CHANGED}input {source}: {what}"
    return integrity.check_files(ctx.work_dir, result[FILES])


def read_marker(path: str) -> dict[str, Any] | None:
    """A stored marker, or None when it is not a regular file, or unreadable, or its content
    does not match the checksum on its first line (truncated, empty, edited): a damaged marker
    is the same as none, its task runs again."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # a FIFO would block
            return None
        with open(path, "rb") as f:
            head, _, body = f.read().partition(b"\n")
        digest = integrity.new_hash()
        digest.update(body)
        if head != digest.hexdigest().encode():
            return None
        result = json.loads(body)
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def run_steps(
    engine: Engine, steps: Iterable[Step], work_dir: str, tasks: TaskCounts
) -> Iterator[tuple[Step, dict[str, Any]]]:
    """``(step, result)`` of every step: stored ones first, then the others as they finish.

    A stored marker is reused only when it is readable and the files it lists still match their
    checksums (checked on the workers); otherwise its task runs again, with a warning naming the
    file, counted as ``redone:bad_marker`` / ``redone:bad_files``. An input changed since a
    marker was written is refused (:class:`.workdir.WorkDirError`): results of the old and the
    new input must not be mixed. ``tasks`` counts steps ``skipped`` (found complete) or ``ran``,
    per stage (the name's prefix), and adds up their seconds."""
    todo, found = [], []
    for step in steps:
        path = marker_path(work_dir, step.name)
        if not os.path.lexists(path):
            todo.append(step)
        elif (result := read_marker(path)) is None:
            logger.warning("damaged completion marker %s: its task runs again", path)
            tasks.counts["redone:bad_marker"] += 1
            todo.append(step)
        else:
            found.append((step, result))
    for (step, result), problem in engine.map_unordered(check_step, found):
        if problem is None:
            tasks.counts[f"{task_kind(step.name)}:skipped"] += 1
            tasks.seconds["skipped"] += result.pop("task_seconds", 0.0)
            result.pop(FILES)
            yield step, result
        elif problem.startswith(CHANGED):
            raise WorkDirError(
                f"--work-dir {work_dir}: {problem.removeprefix(CHANGED)} changed since task "
                f"{step.name} read it; use a new --work-dir (or restore the input)"
            )
        else:
            logger.warning("%s: task %s runs again", problem, step.name)
            tasks.counts["redone:bad_files"] += 1
            todo.append(step)
    for step, result in engine.map_unordered(run_step, todo):
        tasks.counts[f"{task_kind(step.name)}:ran"] += 1
        tasks.seconds["ran"] += result.pop("task_seconds")
        result.pop(FILES)
        yield step, result
