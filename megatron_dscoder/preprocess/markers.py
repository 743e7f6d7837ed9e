"""Completion markers: a finished task leaves ``done/NAME.json`` (its result), so a rerun skips it.

A task's result is small (counts and paths, see :mod:`.passes`); :func:`run_step` writes it under
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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from megatron_dscoder.preprocess.engine import Engine
from megatron_dscoder.preprocess.stages import StageConfig


@dataclass(frozen=True)
class Step:
    """One task: ``fn(item, config)``, remembered as ``done/{name}.json``."""

    name: str
    fn: Callable[[Any, StageConfig], dict[str, Any]]
    item: Any


def marker_path(work_dir: str, name: str) -> str:
    return os.path.join(work_dir, "done", f"{name}.json")


def write_json(path: str, data: Any) -> None:
    """``data`` as JSON at ``path``, written under a temporary name and renamed."""
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(partial, path)


def run_step(step: Step, config: StageConfig) -> dict[str, Any]:
    """Run a step on a worker and leave its marker."""
    result = step.fn(step.item, config)
    write_json(marker_path(config.work_dir, step.name), result)
    return result


def run_steps(
    engine: Engine, steps: Iterable[Step], work_dir: str, counts: Counter[str]
) -> Iterator[tuple[Step, dict[str, Any]]]:
    """``(step, result)`` of every step: stored ones first, then the others as they finish.

    ``counts`` gets ``skipped`` (found complete) and ``ran`` per stage (the name's prefix).
    """
    todo = []
    for step in steps:
        stage = step.name.split("-")[0]
        path = marker_path(work_dir, step.name)
        if os.path.exists(path):
            counts[f"{stage}:skipped"] += 1
            with open(path) as f:
                yield step, json.load(f)
        else:
            todo.append(step)
    for step, result in engine.map_unordered(run_step, todo):
        counts[f"{step.name.split('-')[0]}:ran"] += 1
        yield step, result
