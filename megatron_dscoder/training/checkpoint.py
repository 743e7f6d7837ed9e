"""Sharded checkpoints with megatron-core's ``dist_checkpointing`` (torch_dist), crash-safe.

Layout of a checkpoint root (``--save`` / ``--load``)::

    ROOT/latest_checkpointed_iteration.txt    # "1200": written last, atomically
    ROOT/iter_0001200/                         # one complete checkpoint
        *.distcp, .metadata, common.pt         # torch_dist shards written by every rank
        run_config.json                        # architecture, layout, counters, run_id
        checksums.json                         # per-file digests (see training/checksums.py)

Protocol: every rank writes its shards into ``iter_XXXXXXX.partial``; after a barrier rank 0
adds ``run_config.json``, renames the directory to ``iter_XXXXXXX`` and only then rewrites the
tracker (write-then-rename). A kill at any point leaves the previous checkpoint as the latest
and loadable; stale ``.partial`` directories are ignored and cleaned up by the next save. A save
that fails (a full disk) removes its ``.partial`` and raises :class:`CheckpointError`.

Every checkpoint records the ``run_id`` of the run that wrote it (inherited on resume);
``--keep-checkpoints`` prunes only the run's own checkpoints, and ``resume.preflight`` refuses a
``--save`` directory holding another run's.

Loading reshards: the model and optimizer are stored in megatron-core's layout-independent
sharded form, so a checkpoint written at TP=2, PP=1 loads at TP=1, PP=2. Per-rank RNG states are
restored only when the layout is unchanged (they are meaningless across layouts).
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
from megatron_dscoder.model.registry import ModelArch
from megatron_dscoder.training import checksums, distopt_state, safe_load

logger = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
METADATA = "run_config.json"
FORMAT_VERSION = 1
_OPTIM_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}
# Fields that fix tensor shapes: a checkpoint must agree on all of them to be loadable.
SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def iteration_dir(root: str | Path, iteration: int) -> Path:
    """``ROOT/iter_0001200`` for iteration 1200."""
    return Path(root) / f"iter_{iteration:07d}"


def _is_complete(path: Path) -> bool:
    return path.is_dir() and (path / METADATA).is_file() and (path / ".metadata").is_file()


def find_latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (tracker first, then a directory scan)."""
    root = Path(root)
    tracker = root / TRACKER
    if tracker.is_file():
        text = tracker.read_text().strip()
        if text.isdigit() and _is_complete(iteration_dir(root, int(text))):
            return iteration_dir(root, int(text))
        logger.warning("%s names %r, which is not a complete checkpoint; scanning", tracker, text)
    candidates = complete_checkpoints(root)
    return candidates[-1] if candidates else None


def read_checkpoint_metadata(ckpt_dir: str | Path) -> dict[str, Any]:
    """The ``run_config.json`` of a checkpoint directory."""
    path = Path(ckpt_dir) / METADATA
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint description ({err})") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported format_version {meta.get('format_version')}")
    return meta


def verify_checkpoint(ckpt_dir: str | Path) -> None:
    """Fail fast, naming the file, if any shard that ``.metadata`` references is missing or short."""
    ckpt_dir = Path(ckpt_dir)
    read_checkpoint_metadata(ckpt_dir)
    safe_load.install()
    try:
        metadata = safe_load.read_metadata(ckpt_dir)
    except safe_load.ForbiddenGlobal as err:
        raise CheckpointError(f"{ckpt_dir / '.metadata'}: refused ({err})") from err
    except Exception as err:  # noqa: BLE001 - any failure here means an unreadable checkpoint
        raise CheckpointError(
            f"{ckpt_dir / '.metadata'}: unreadable, corrupted? ({type(err).__name__}: {err})"
        ) from err
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(
            needed.get(info.relative_path, 0), info.offset + info.length
        )
    for name, size in sorted(needed.items()):
        path = ckpt_dir / name
        actual = path.stat().st_size if path.is_file() else -1
        if actual < size:
            state = "missing" if actual < 0 else f"truncated ({actual} of {size} bytes)"
            raise CheckpointError(f"{path}: shard {state}")
    if not (ckpt_dir / "common.pt").is_file():
        raise CheckpointError(f"{ckpt_dir / 'common.pt'}: missing")


def check_architecture(meta: dict[str, Any], arch: ModelArch, ckpt_dir: Path) -> None:
    """Refuse a checkpoint of another model size, naming the differing fields."""
    saved = meta.get("arch", {})
    diffs = [
        f"{f}: checkpoint {saved.get(f)} vs run {getattr(arch, f)}"
        for f in SHAPE_FIELDS
        if saved.get(f) != getattr(arch, f)
    ]
    saved_rows = ModelArch(**saved).padded_vocab_size() if saved else None
    if saved_rows is not None and saved_rows != arch.padded_vocab_size():
        diffs.append(
            f"padded vocabulary: checkpoint {saved_rows} vs run {arch.padded_vocab_size()}"
        )
    if diffs:
        raise CheckpointError(
            f"{ckpt_dir / METADATA}: checkpoint of another model "
            f"({meta.get('model')}); " + "; ".join(diffs)
        )


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
    model: list, optimizer: Any | None, *, with_rng: bool, is_loading: bool
) -> dict[str, Any]:
    assert len(model) == 1, "one model chunk per rank (no virtual pipeline)"
    model_sd = unwrap(model[0]).sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        if is_loading:
            distopt_state.install()
            distopt_state.allocate_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(
            model_sd, is_loading=is_loading, metadata=_OPTIM_METADATA
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
) -> Path:
    """Collective: write ``ROOT/iter_XXXXXXX`` atomically and make it the latest.

    ``run_meta`` goes into ``run_config.json`` (it must hold ``arch``); ``common`` (iteration
    counters, scheduler state) goes into the checkpoint itself. Returns the final directory.
    """
    root = Path(root)
    final = iteration_dir(root, iteration)
    partial = final.with_name(final.name + ".partial")
    rank0 = torch.distributed.get_rank() == 0
    error: BaseException | None = None
    try:
        _write(partial, iteration, model, optimizer, run_meta, common)
    except BaseException as err:  # DCP's CheckpointException is not an Exception
        if not isinstance(err, Exception | CheckpointException):
            raise
        error = err
    if _on_any_rank(error is not None):  # every rank raises, none waits in the next barrier
        error = error or RuntimeError("another rank failed to write its part")
        raise _save_failed(error, root, partial, iteration) from error
    if rank0:
        if final.exists():  # re-saving an iteration: replace the old copy only now
            shutil.rmtree(final)
        os.replace(partial, final)
        tmp = root / (TRACKER + ".tmp")
        tmp.write_text(f"{iteration}\n")
        os.replace(tmp, root / TRACKER)
        if keep_last:
            _prune(root, keep_last, run_meta.get("run_id"))
    torch.distributed.barrier()
    return final


def _write(
    partial: Path,
    iteration: int,
    model: list,
    optimizer: Any | None,
    run_meta: dict[str, Any],
    common: dict[str, Any] | None,
) -> None:
    rank0 = torch.distributed.get_rank() == 0
    if rank0:
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    torch.distributed.barrier()
    state = _sharded_state(model, optimizer, with_rng=True, is_loading=False)
    state.update(common or {})
    state["iteration"] = iteration
    lifeline.tie_checkpoint_writer()
    dist_checkpointing.save(state, str(partial))
    torch.distributed.barrier()  # every rank's shards are on disk
    if rank0:
        meta = {
            "format_version": FORMAT_VERSION,
            **run_meta,
            "iteration": iteration,
            "layout": dict(zip(("pp", "tp", "dp"), _layout(), strict=True)),
        }
        (partial / METADATA).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    checksums.write_manifest(partial)


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _on_any_rank(flag: bool) -> bool:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


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


def run_id_of(ckpt_dir: Path) -> str | None:
    """The ``run_id`` recorded in a checkpoint (None: written before run ids existed)."""
    return read_checkpoint_metadata(ckpt_dir).get("run_id")


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete ``iter_*`` directories under ``root``, oldest first."""
    return sorted(p for p in root.glob("iter_*") if p.name[5:].isdigit() and _is_complete(p))


def _prune(root: Path, keep_last: int, run_id: str | None) -> None:
    # Only this run's checkpoints: another run's (or a legacy one) is never deleted here.
    own = [p for p in complete_checkpoints(root) if run_id_of(p) in (run_id, None)]
    for old in own[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


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
    state = _sharded_state(model, optimizer, with_rng=with_rng, is_loading=True)
    try:
        loaded = dist_checkpointing.load(state, str(ckpt_dir))
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
