"""``--async-save``: checkpoints written by background processes while training goes on.

megatron-core's torch_dist strategy turns a save into an ``AsyncRequest``; its
``AsyncCallsQueue`` forks one writer process per save (``TemporalAsyncCaller``) and, once every
rank's writer is done, runs the request's finalisation on all ranks: the global ``.metadata``,
``metadata.json``, then this project's own (``run_config.json``, the checksum manifest, the
rename of ``iter_XXXXXXX.partial`` and the tracker; see ``checkpointing/checkpoint.py``). Until then
the previous checkpoint stays the latest, so a kill mid-write loses only the unfinished one.

The writer works on a snapshot: on a GPU megatron-core copies the tensors to host memory before
the fork; on CPU the fork itself is the snapshot (copy-on-write), so the optimizer steps that
follow never reach the file. Finalisation is collective: :func:`finalize` runs before each save,
at every iteration without blocking (a single-integer all-reduce), and blocking when training
ends; :func:`abort` kills the writer on the way out of a failed run (nothing collective).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

logger = logging.getLogger(__name__)

_queue: AsyncCallsQueue | None = None


def schedule(request: Any, finish: Callable[[], None]) -> None:
    """Start writing ``request`` (megatron-core's ``AsyncRequest``) in the background; ``finish``
    runs on every rank after the last rank's writer is done. Collective."""
    global _queue
    if _queue is None:
        _queue = AsyncCallsQueue(persistent=False)
    request.add_finalize_fn(finish)
    _queue.schedule_async_request(request)


def pending() -> int:
    """Saves scheduled and not yet finalised (on this rank)."""
    return _queue.get_num_unfinalized_calls() if _queue is not None else 0


def finalize(blocking: bool) -> None:
    """Collective: finalise the saves whose writers are done on every rank (all of them, waiting,
    if ``blocking``). Raises what a failed save raises (``CheckpointError``), on every rank."""
    if _queue is None:
        return
    _queue.maybe_finalize_async_calls(blocking=blocking)


def abort() -> None:
    """Kill this rank's writer and forget the pending saves: their ``.partial`` directories are
    never promoted (the next run's first save removes them). Not collective."""
    global _queue
    if _queue is None:
        return
    if _queue.get_num_unfinalized_calls():
        logger.warning("%d checkpoint(s) still being written: abandoned", pending())
    for call in _queue.async_calls:
        call.async_caller.close(abort=True)
    _queue = None
