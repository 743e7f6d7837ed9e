"""Checkpoint directories: their layout, what a checkpoint records, and the checks before a load.

A checkpoint root holds ``iter_XXXXXXX`` directories and the tracker naming the latest; each
checkpoint describes itself in ``run_config.json`` (architecture, layout, optimizer format,
counters, run id). The checks here read only those files and torch_dist's index, so they run in
``resume.preflight`` before any memory is spent on the model: incomplete or truncated shards,
another model size, or an optimizer state this layout cannot load fail there, naming the file.
Writing and loading are in ``checkpointing/checkpoint.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from megatron_dscoder.checkpointing import formats, safe_load
from megatron_dscoder.model.registry import ModelArch

logger = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
METADATA = "run_config.json"
FORMAT_VERSION = 1
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
    """Fail fast, naming the file, if any shard that ``.metadata`` references is missing
    or short."""
    ckpt_dir = Path(ckpt_dir)
    read_checkpoint_metadata(ckpt_dir)
    safe_load.install()
    try:
        metadata = safe_load.read_metadata(ckpt_dir)
    except safe_load.ForbiddenGlobal as err:
        raise CheckpointError(f"{ckpt_dir / '.metadata'}: refused ({err})") from err
    except Exception as err:
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


def optimizer_format(meta: dict[str, Any]) -> str | None:
    """The distributed optimizer's layout in a checkpoint (None: saved without it); checkpoints
    from before the field was recorded hold the fully reshardable one."""
    if "optimizer_format" in meta:
        return meta["optimizer_format"]
    distributed = meta.get("parallel", {}).get("use_distributed_optimizer")
    return formats.LEGACY if distributed else None


def check_optimizer_layout(
    meta: dict[str, Any], ckpt_dir: Path, distributed: bool, *, tp: int, pp: int
) -> None:
    """Refuse, saying what to do, an optimizer state this run cannot load (before the model is
    built when called from ``resume.preflight``)."""
    why = formats.layout_problem(
        meta.get("layout", {}), optimizer_format(meta), tp=tp, pp=pp, distributed=distributed
    )
    if why:
        raise CheckpointError(f"{ckpt_dir}: {why}")


def run_id_of(ckpt_dir: Path) -> str | None:
    """The ``run_id`` recorded in a checkpoint (None: written before run ids existed)."""
    return read_checkpoint_metadata(ckpt_dir).get("run_id")


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete ``iter_*`` directories under ``root``, oldest first."""
    return sorted(p for p in root.glob("iter_*") if p.name[5:].isdigit() and _is_complete(p))


def prune(root: Path, keep_last: int, run_id: str | None) -> None:
    # Only this run's checkpoints: another run's (or a legacy one) is never deleted here.
    own = [p for p in complete_checkpoints(root) if run_id_of(p) in (run_id, None)]
    for old in own[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
