"""Execution engines: where the pipeline's partition functions run.

The driver (:mod:`megatron_dscoder.preprocess.pipeline`) only ever calls
``engine.map_unordered(fn, items)``: run
the module-level function ``fn(item, config)`` (``config`` given once, when the engine is made)
on every item, and yield ``(item, result)`` as items finish, with a bounded number in flight
(one slow task never idles the others). The stage code (``fn``) is the same for
every engine; engines differ only in where it runs:

``local`` (default)  a ``spawn`` process pool of ``--workers`` processes on this machine
                     (``--workers 1``: in this process); the workers die with the driver,
                     even a SIGKILLed one (:mod:`megatron_dscoder.lifeline`).
``ray``              Ray tasks on a Ray cluster (``--ray-address``; none starts a local Ray
                     instance on this machine). ``config`` is put in the object store once;
                     each item and result travels through it. Workers read the inputs and
                     read/write the work directory themselves, so inputs, ``--output-prefix``
                     and ``--tmp-dir`` must be on storage every node sees, and
                     ``megatron_dscoder`` must be importable on every node (installed in the
                     same environment, or shipped with a Ray ``runtime_env``). Items and
                     results are references and counts (``preprocess.tasks.passes``): the
                     driver moves no corpus bytes. A task whose worker dies is retried
                     (``max_retries``).

Because the pipeline applies results by task number and the stage code is deterministic, both
engines (and any worker count) write byte-identical output.

A cluster that fails under a run (a Ray node or its raylet dies, a task's retries run out, a
local worker process is killed) raises :class:`ClusterFailure`, one line naming what Ray or the
pool reported; an exception raised by the stage code itself passes through unchanged. Before
any task, :func:`check_ray_address` refuses an address where nothing answers and
:func:`check_workers_code` a node whose ``megatron_dscoder`` differs from the driver's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from megatron_dscoder.errors import UserError
from megatron_dscoder.lifeline import die_with_parent
from megatron_dscoder.preprocess.config import ENGINES

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C")


class ClusterFailure(UserError, RuntimeError):
    """The engine lost workers or nodes (the environment, not the data or the code)."""


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


class InlineExecutor(Executor):
    """Runs each call at submit time in this process (``--workers 1``)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _start_worker(parent: int, initializer: Callable[[C], None], config: C) -> None:
    """Pool initializer: die with the driver (even SIGKILLed), then the stage initializer."""
    die_with_parent(parent)
    initializer(config)


class LocalEngine:
    """A process pool (or this process) running partition functions."""

    name = "local"

    def __init__(self, workers: int, initializer: Callable[[C], None], config: C) -> None:
        self.workers = max(1, workers)
        self.executor: Executor = (
            InlineExecutor()
            if self.workers == 1
            else ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(), initializer, config),
            )
        )
        self.in_flight = 2 * self.workers + 2 if self.workers > 1 else 1
        self.config = config

    def map_unordered(self, fn: Callable[[T, Any], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        """``(item, fn(item, config))`` as they finish, at most ``in_flight`` pending."""
        pending: dict[Future[R], T] = {}
        iterator = iter(items)
        while True:
            for item in iterator:
                pending[self.executor.submit(fn, item, self.config)] = item
                if len(pending) >= self.in_flight:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    raise ClusterFailure(f"a worker process died ({_first_line(err)})") from err
                yield item, result

    def close(self, cancel: bool = False) -> None:
        self.executor.shutdown(wait=not cancel, cancel_futures=cancel)


def _ray_call(fn: Callable[[T, Any], R], item: T, config: Any) -> R:
    return fn(item, config)


class RayEngine:
    """Ray tasks; joins the running Ray instance, or ``address``, or starts a local one."""

    name = "ray"

    def __init__(self, address: str | None, config: Any, max_in_flight: int = 0) -> None:
        try:
            import ray
        except ImportError as err:
            raise ValueError("--engine ray needs Ray installed (pip install ray)") from err
        self.ray = ray
        self.owns = not ray.is_initialized()
        if self.owns:
            try:
                ray.init(address=address or None, include_dashboard=False, logging_level="WARNING")
            except ConnectionError as err:
                raise UserError(
                    f"--ray-address {address}: no Ray cluster ({_first_line(err)})"
                ) from err
        check_workers_code(ray)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = cpus
        self.in_flight = max_in_flight or 2 * cpus + 2
        self.remote = ray.remote(num_cpus=1, max_retries=2)(_ray_call)
        self.config_ref = ray.put(config)
        logger.info("Ray engine: %d CPUs, %d tasks in flight", cpus, self.in_flight)

    def map_unordered(self, fn: Callable[[T, Any], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        """``(item, fn(item, config))`` as they finish (``ray.wait``), ``in_flight`` pending."""
        pending: dict[Any, T] = {}
        iterator = iter(items)
        while True:
            for item in iterator:
                pending[self.remote.remote(fn, item, self.config_ref)] = item
                if len(pending) >= self.in_flight:
                    break
            if not pending:
                return
            try:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                results = [(pending.pop(ref), self.ray.get(ref)) for ref in done]
            except self.ray.exceptions.RayError as err:
                if isinstance(err, self.ray.exceptions.RayTaskError):
                    raise  # the task's own exception (the stage code), not the cluster's
                raise ClusterFailure(f"the Ray cluster failed ({_first_line(err)})") from err
            yield from results

    def close(self, cancel: bool = False) -> None:
        del self.config_ref
        if self.owns:
            self.ray.shutdown()


Engine = LocalEngine | RayEngine


def source_fingerprint() -> tuple[str, str]:
    """(where, digest of the sources) of the ``megatron_dscoder`` this process imports."""
    import hashlib
    import os

    import megatron_dscoder

    root = os.path.dirname(os.path.abspath(megatron_dscoder.__file__))
    digest = hashlib.blake2b(digest_size=8)
    for top, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(top, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read())
    return root, digest.hexdigest()


_PROBE_CODE = source_fingerprint.__code__
_checked: set[str] = set()


def check_workers_code(ray: Any) -> None:
    """Every node of the cluster must run the driver's ``megatron_dscoder``: tasks name their
    functions by module, so a node with another version runs other code (results of another
    shape, or other bytes). One probe per node, shipped by value (an older version has no such
    function), compares digests of the sources; once per cluster and process."""
    cluster = ray.get_runtime_context().gcs_address
    if cluster in _checked:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = types.FunctionType(_PROBE_CODE, {"__builtins__": __builtins__})
    probe.__qualname__ = probe.__name__ = "megatron_dscoder_source_probe"  # pickled by value
    remote = ray.remote(num_cpus=0, max_retries=0)(probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {
        remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(): n.get("NodeManagerAddress", n["NodeID"])
        for n in nodes
    }
    ours = source_fingerprint()
    for ref, node in refs.items():
        try:
            theirs = ray.get(ref, timeout=600)
        except ray.exceptions.RayError as err:
            raise UserError(
                f"Ray node {node} cannot import megatron_dscoder ({_first_line(err)}); install "
                "this package on every node"
            ) from err
        if theirs[1] != ours[1]:
            raise UserError(
                f"Ray node {node} runs another megatron_dscoder ({theirs[0]}, sources "
                f"{theirs[1]}) than this driver ({ours[0]}, sources {ours[1]}); install the same "
                "version on every node"
            )
    _checked.add(cluster)


def check_ray_address(address: str | None) -> None:
    """Refuse a ``HOST:PORT`` where nothing listens before any work (Ray itself keeps retrying
    such an address for minutes); ``auto``, ``local`` and ``ray://`` addresses are Ray's."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address}: expected HOST:PORT, auto or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, OverflowError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(
            f"--ray-address {address}: nothing answers there ({reason}); start the head node "
            "with `ray start --head` and give the address it prints"
        ) from err


def make_engine(
    kind: str,
    workers: int,
    config: Any,
    initializer: Callable[[Any], None],
    ray_address: str | None = None,
) -> Engine:
    """The engine named ``kind`` (one of :data:`ENGINES`)."""
    if kind == "local":
        return LocalEngine(workers, initializer, config)
    if kind == "ray":
        return RayEngine(ray_address, config)
    raise ValueError(f"unknown engine {kind!r} (choose from {', '.join(ENGINES)})")
