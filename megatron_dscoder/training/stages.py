"""Which stage a checkpoint belongs to, and whether this run may resume or start from it.

A stage (pretraining at 4K, the 16K context extension, instruction tuning) starts from its base's
weights (``--finetune``) and, when interrupted, resumes from its own ``--save``. Both directories
hold checkpoints of the same shapes, so the shape check cannot tell them apart: resuming a base's
checkpoint as if it were the stage's own would run the stage with the base's Adam state, its
decayed LR and its iteration count, and the stage would inherit the base's ``run_id`` (so
``--keep-checkpoints`` would prune the base). The run config does tell them apart:

* ``sft``: ``data.sft`` (loss on responses only);
* ``extend-context``: RoPE scaling (``arch.seq_len_interpolation_factor`` and ``rotary_base``);
* ``pretrain``: neither.

The precision (``--bf16``) must also match on a resume: megatron-core's optimizer state of a bf16
run holds fp32 main weights that an fp32 run's optimizer has no slot for (and the reverse).
Weights alone (``--finetune``, ``--no-load-optim``) load across precisions.

Every check here reads ``run_config.json`` only and runs before the model is built. Starting a
stage from weights (``--finetune``) is not restricted here: a run's stage is derived from its
config, and a plain ``--finetune`` from a 16K model is a RoPE-scaled run like the 16K stage
itself; ``--stage extend-context`` on an already extended checkpoint is refused by the command
line (``config/cli.py``), which knows the stage asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from megatron_dscoder.config.run import ConfigError, RunConfig

PRETRAIN, EXTEND_CONTEXT, SFT = "pretrain", "extend-context", "sft"


class StageMismatch(ConfigError):
    """A checkpoint of another stage or precision; the message names the file."""


def _stage(sft: bool, interpolation: float | None) -> str:
    if sft:
        return SFT
    return EXTEND_CONTEXT if interpolation is not None else PRETRAIN


def run_stage(run: RunConfig) -> str:
    """The stage this run trains."""
    return _stage(run.data.sft, run.arch.seq_len_interpolation_factor)


def checkpoint_stage(meta: dict[str, Any]) -> str:
    """The stage recorded by a checkpoint's ``run_config.json`` (an HF import: ``pretrain``
    unless its architecture is RoPE-scaled)."""
    arch = meta.get("arch") or {}
    data = meta.get("data") or {}
    return _stage(bool(data.get("sft")), arch.get("seq_len_interpolation_factor"))


def _rope(arch: dict[str, Any]) -> tuple[Any, Any]:
    return arch.get("rotary_base"), arch.get("seq_len_interpolation_factor")


def _bf16(value: bool | None) -> bool:
    import torch

    return torch.cuda.is_available() if value is None else bool(value)


def _describe(rope: tuple[Any, Any]) -> str:
    base, factor = rope
    return f"RoPE base {base}" + (f", interpolation x{factor:g}" if factor else "")


def check_resume(
    meta: dict[str, Any], run: RunConfig, ckpt_dir: Path, with_optimizer: bool
) -> None:
    """Refuse to resume ``ckpt_dir`` (counters, optimizer) as this run unless it is this stage's,
    with the same RoPE and, when the optimizer state is loaded, the same precision."""
    where = ckpt_dir / "run_config.json"
    saved, mine = checkpoint_stage(meta), run_stage(run)
    if saved != mine:
        raise StageMismatch(
            f"{where}: a checkpoint of stage {saved}, not of this {mine} run; give the stage "
            "its own --save directory (it starts from --load's weights)"
        )
    saved_rope = _rope(meta.get("arch") or {})
    my_rope = (run.arch.rotary_base, run.arch.seq_len_interpolation_factor)
    if saved_rope != my_rope:
        raise StageMismatch(
            f"{where}: saved with {_describe(saved_rope)}, this run has {_describe(my_rope)}"
        )
    if with_optimizer:
        saved_bf16 = _bf16((meta.get("train") or {}).get("bf16"))
        if saved_bf16 != _bf16(run.train.bf16):
            names = {True: "bf16 (--bf16)", False: "fp32 (--no-bf16)"}
            raise StageMismatch(
                f"{where}: saved in {names[saved_bf16]}, this run is {names[not saved_bf16]}; "
                "resume with the checkpoint's precision, or load its weights only "
                "(--no-load-optim, or --finetune)"
            )
