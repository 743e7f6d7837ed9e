"""Sharded checkpoints with megatron-core's ``dist_checkpointing`` (torch_dist), crash-safe.

Layout of a checkpoint root (``--save`` / ``--load``)::

    ROOT/latest_checkpointed_iteration.txt    # "1200": written last, atomically
    ROOT/iter_0001200/                         # one complete checkpoint
        *.distcp, .metadata, common.pt         # torch_dist shards written by every rank
        run_config.json                        # architecture, layout, counters, run_id
        checksums.json                         # per-file digests (see checkpointing/checksums.py)

Protocol: every rank writes its shards into ``iter_XXXXXXX.partial``; after a barrier rank 0
adds ``run_config.json``, renames the directory to ``iter_XXXXXXX`` and only then rewrites the
tracker (write-then-rename). A kill at any point leaves the previous checkpoint as the latest
and loadable; stale ``.partial`` directories are ignored and cleaned up by the next save. A save
that fails (a full disk) removes its ``.partial`` and raises :class:`CheckpointError`.

Every checkpoint records the ``run_id`` of the run that wrote it (inherited on resume);
``--keep-checkpoints`` prunes only the run's own checkpoints, and ``resume.preflight`` refuses a
``--save`` directory holding another run's.

Loading reshards: the model (and the optimizer without ``--use-distributed-optimizer``) is
stored in megatron-core's layout-independent sharded form, so a checkpoint written at TP=2, PP=1
loads at TP=1, PP=2. The distributed optimizer's state is written in the ``dp_reshardable``
layout (each DP rank its own slice, no gather; it loads at any DP size but only at the TP x PP
it was written at) unless ``--ckpt-fully-reshardable`` asks for the layout-free one: see
``checkpointing/formats.py``. ``run_config.json`` records which, and a load that cannot work is
refused before the model is built. Replicated tensors are written and read once per DP group
(megatron-core's fully-parallel wrappers). ``--async-save`` writes in the background
(``checkpointing/async_save.py``). A checkpoint of the local spec loads into the Transformer Engine
spec and back (``checkpointing/extra_state.py``). Per-rank RNG states are restored only when the
layout is unchanged (they are meaningless across layouts).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
from torch.distributed.checkpoint.api import CheckpointException

from megatron_dscoder import lifeline
from megatron_dscoder.checkpointing import (
    async_save,
    checksums,
    distopt_state,
    extra_state,
    formats,
    safe_load,
)
from megatron_dscoder.checkpointing.files import (  # noqa: F401 - the checkpoint API, re-exported
    FORMAT_VERSION,
    METADATA,
    SHAPE_FIELDS,
    TRACKER,
    CheckpointError,
    check_architecture,
    check_optimizer_layout,
    complete_checkpoints,
    find_latest_checkpoint,
    iteration_dir,
    optimizer_format,
    prune,
    read_checkpoint_metadata,
    run_id_of,
    verify_checkpoint,
)
from megatron_dscoder.checkpointing.formats import SaveFormat
from megatron_dscoder.parallel.distributed import any_rank

logger = logging.getLogger(__name__)

ROUTINE = SaveFormat()
"""The format of routine saves: ``dp_reshardable``, fully parallel, synchronous."""


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The GPTModel inside a megatron DDP wrapper (keys without the ``module.`` prefix)."""
    return getattr(chunk, "module", chunk)


def _layout() -> tuple[int, int, int]:
    return (
        parallel_state.get_pipeline_model_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_data_parallel_world_size(),
    )


def _rank_in_layout() -> tuple[int, int, int]:
    return (
        parallel_state.get_pipeline_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_data_parallel_rank(),
    )


def _rng_state() -> dict[str, Any]:
    state = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _sharded_state(
    model: list,
    optimizer: Any | None,
    optim_meta: dict[str, Any],
    *,
    with_rng: bool,
    is_loading: bool,
) -> dict[str, Any]:
    assert len(model) == 1, "one model chunk per rank (no virtual pipeline)"
    model_sd = unwrap(model[0]).sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        if is_loading:
            distopt_state.install()
            distopt_state.allocate_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(
            model_sd, is_loading=is_loading, metadata=optim_meta
        )
    if with_rng:
        state["rng_state"] = ShardedObject(
            "rng_state", _rng_state(), _layout(), _rank_in_layout(), replica_id=0
        )
    return state


def save_checkpoint(
    root: str | Path,
    *,
    iteration: int,
    model: list,
    optimizer: Any | None,
    run_meta: dict[str, Any],
    common: dict[str, Any] | None = None,
    keep_last: int | None = None,
    fmt: SaveFormat = ROUTINE,
) -> Path:
    """Collective: write ``ROOT/iter_XXXXXXX`` atomically and make it the latest.

    ``run_meta`` goes into ``run_config.json`` (it must hold ``arch``); ``common`` (iteration
    counters, scheduler state) goes into the checkpoint itself. Returns the final directory.
    With ``fmt.async_save`` the shards are written in the background and the directory appears
    when :func:`finalize_saves` runs after every rank's writer is done (a save in flight is
    finalised before the next one starts).
    """
    async_save.finalize(blocking=True)
    root = Path(root)
    final = iteration_dir(root, iteration)
    partial = final.with_name(final.name + ".partial")
    meta = {
        "format_version": FORMAT_VERSION,
        **run_meta,
        "iteration": iteration,
        "layout": dict(zip(("pp", "tp", "dp"), _layout(), strict=True)),
        "optimizer_format": fmt.optimizer if formats.is_distributed(optimizer) else None,
    }
    request = _attempt(
        lambda: _write_shards(partial, iteration, model, optimizer, common, fmt),
        root,
        partial,
        iteration,
    )
    if request is None:
        _complete(root, partial, final, meta, keep_last, ())
        return final
    finish = request.finalize_fns[:]  # megatron-core's own: the global .metadata, metadata.json
    request = request._replace(finalize_fns=[])
    async_save.schedule(request, lambda: _complete(root, partial, final, meta, keep_last, finish))
    return final


def finalize_saves(blocking: bool = True) -> None:
    """Collective: promote the ``--async-save`` checkpoints whose shards are written (all of
    them, waiting, when ``blocking``). Raises :class:`CheckpointError` for one that failed."""
    async_save.finalize(blocking)


def _attempt(step: Any, root: Path, partial: Path, iteration: int) -> Any:
    """Run one collective step of a save; a failure on any rank raises on every rank."""
    error: BaseException | None = None
    result = None
    try:
        result = step()
    except BaseException as err:  # DCP's CheckpointException is not an Exception
        if not isinstance(err, Exception | CheckpointException):
            raise
        error = err
    if any_rank(error is not None)[0]:  # every rank raises, none waits in the next barrier
        error = error or RuntimeError("another rank failed to write its part")
        raise _save_failed(error, root, partial, iteration) from error
    return result


def _write_shards(
    partial: Path,
    iteration: int,
    model: list,
    optimizer: Any | None,
    common: dict[str, Any] | None,
    fmt: SaveFormat,
) -> Any:
    if torch.distributed.get_rank() == 0:
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    torch.distributed.barrier()
    state = _sharded_state(
        model, optimizer, fmt.optimizer_metadata(), with_rng=True, is_loading=False
    )
    state.update(common or {})
    state["iteration"] = iteration
    lifeline.tie_checkpoint_writer()
    return dist_checkpointing.save(
        state,
        str(partial),
        sharded_strategy=formats.save_strategy(fmt.fully_parallel),
        async_sharded_save=fmt.async_save,
    )


def _complete(
    root: Path,
    partial: Path,
    final: Path,
    meta: dict[str, Any],
    keep_last: int | None,
    finish: Any,
) -> None:
    """Collective, once every rank's shards are on disk: describe, hash, rename, track."""
    rank0 = torch.distributed.get_rank() == 0

    def describe() -> None:
        for fn in finish:
            fn()
        torch.distributed.barrier()  # every rank's shards are on disk
        if rank0:
            (partial / METADATA).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        checksums.write_manifest(partial)

    _attempt(describe, root, partial, meta["iteration"])
    if rank0:
        if final.exists():  # re-saving an iteration: replace the old copy only now
            shutil.rmtree(final)
        os.replace(partial, final)
        tmp = root / (TRACKER + ".tmp")
        tmp.write_text(f"{meta['iteration']}\n")
        os.replace(tmp, root / TRACKER)
        if keep_last:
            prune(root, keep_last, meta.get("run_id"))
    torch.distributed.barrier()


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(err: BaseException, root: Path) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL or "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:  # torch's zip writer reports ENOSPC as "unexpected pos ..." without an errno
        return shutil.disk_usage(root).free < 64 << 20
    except OSError:
        return False


def _save_failed(err: BaseException, root: Path, partial: Path, iteration: int) -> CheckpointError:
    full = _disk_full(err, root)  # before the cleanup frees the space
    if torch.distributed.get_rank() == 0:
        shutil.rmtree(partial, ignore_errors=True)
    latest = find_latest_checkpoint(root)
    kept = f"{latest} is still the latest" if latest else "no earlier checkpoint exists"
    if full:
        return CheckpointError(
            f"no space left on device ({root}): checkpoint of iteration {iteration} not saved, "
            f"its partial copy removed; {kept}"
        )
    return CheckpointError(
        f"{partial}: checkpoint of iteration {iteration} failed ({type(err).__name__}: {err}); "
        f"partial copy removed; {kept}"
    )


def load_checkpoint(
    ckpt_dir: str | Path,
    *,
    model: list,
    optimizer: Any | None,
    load_rng: bool = True,
    allow_unverified: bool = False,
) -> dict[str, Any]:
    """Collective: load model (and optimizer, RNG when given) in place; returns common state.

    The caller has already run :func:`verify_checkpoint` and :func:`check_architecture`; the
    checksum manifest is verified here, every rank hashing its share of the files.
    RNG states are loaded only if ``load_rng`` and the layout equals the saved one.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_checkpoint_metadata(ckpt_dir)
    saved_layout = tuple(meta.get("layout", {}).get(k) for k in ("pp", "tp", "dp"))
    with_rng = load_rng and saved_layout == _layout()
    if load_rng and not with_rng:
        logger.info("layout changed %s -> %s: RNG states not restored", saved_layout, _layout())
    problems = checksums.verify_manifest(ckpt_dir, allow_unverified)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{problems[0]}{more}; checkpoint refused")
    safe_load.install()
    layout = optimizer_format(meta)
    if optimizer is not None:
        tp, pp = _layout()[1], _layout()[0]
        distributed = formats.is_distributed(optimizer)
        check_optimizer_layout(meta, ckpt_dir, distributed, tp=tp, pp=pp)
    optim_meta = formats.optimizer_metadata(layout or formats.LEGACY)
    state = _sharded_state(model, optimizer, optim_meta, with_rng=with_rng, is_loading=True)
    saved = extra_state.checkpoint_objects(ckpt_dir)
    state["model"] = extra_state.align(state["model"], saved, ckpt_dir)
    try:
        loaded = dist_checkpointing.load(
            state, str(ckpt_dir), sharded_strategy=formats.load_strategy()
        )
    except (Exception, CheckpointException) as err:  # DCP's is not an Exception
        cause = next(iter((getattr(err, "failures", None) or {0: err}).values()))
        cause = cause[0] if isinstance(cause, tuple) else cause  # DCP: (exception, traceback)
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{ckpt_dir}: cannot be loaded, corrupted? ({type(cause).__name__}: {first})"
        ) from err
    unwrap(model[0]).load_state_dict(loaded.pop("model"), strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(loaded.pop("optimizer"))
    if with_rng:
        _set_rng_state(loaded.pop("rng_state"))
    return loaded
