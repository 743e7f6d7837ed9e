"""Completion markers: a finished task leaves ``done/NAME.json`` (its result), so a rerun skips it.

A task's result is small (counts and paths, see :mod:`megatron_dscoder.preprocess.tasks.passes`);
:func:`run_step` writes it under
a temporary name and renames it once the task's own files are in place, so a marker always
means "this task's outputs are complete". :func:`run_steps` hands the steps without a marker to
the engine, unordered (one slow task never holds back the others), and yields the stored
results of the others as skipped; callers apply results by step name, in a fixed order, so
the output does not depend on completion order. A rerun with the same ``--work-dir`` after any
kill therefore redoes only the tasks that had not finished.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from megatron_dscoder.preprocess.cluster.engine import Engine
from megatron_dscoder.preprocess.cluster.layout import marker_path, task_kind, write_json
from megatron_dscoder.preprocess.stages.base import WorkerContext


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
    """Run a step on a worker and leave its marker (with the seconds it took)."""
    started = time.perf_counter()
    result = step.fn(step.item, ctx)
    result["task_seconds"] = time.perf_counter() - started
    write_json(marker_path(ctx.work_dir, step.name), result)
    return result


def run_steps(
    engine: Engine, steps: Iterable[Step], work_dir: str, tasks: TaskCounts
) -> Iterator[tuple[Step, dict[str, Any]]]:
    """``(step, result)`` of every step: stored ones first, then the others as they finish.

    ``tasks`` counts them, ``skipped`` (found complete) or ``ran``, per stage (the name's
    prefix), and adds up their seconds."""
    todo = []
    for step in steps:
        kind = task_kind(step.name)
        path = marker_path(work_dir, step.name)
        if os.path.exists(path):
            with open(path) as f:
                result = json.load(f)
            tasks.counts[f"{kind}:skipped"] += 1
            tasks.seconds["skipped"] += result.pop("task_seconds", 0.0)
            yield step, result
        else:
            todo.append(step)
    for step, result in engine.map_unordered(run_step, todo):
        tasks.counts[f"{task_kind(step.name)}:ran"] += 1
        tasks.seconds["ran"] += result.pop("task_seconds")
        yield step, result
