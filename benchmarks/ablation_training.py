"""The training side the three ablations share: their scales' common fields, the flags of a
training run, and the run itself, each in a process of its own through the real entry point.

A scale with an ``arch`` registers that architecture (and a size's defaults) for its training
processes only (``_LAUNCH``); without one, the registry's own ``model`` is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainScale:
    """What every ablation's scale fixes for its training runs (``repo_ablation`` shares it)."""

    model: str
    vocab: int
    seq_length: int
    global_batch_size: int
    train_iters: int
    lr: float
    corpus_chars: float


# Runs the trainer with one extra registry size (the cpu or gpu scale's), then the real entry
# point.
_LAUNCH = """
import sys
from megatron_dscoder.config import recipes
from megatron_dscoder.model import registry
name, arch, size = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3])
registry.MODELS[name] = registry.ModelArch(**arch)
recipes.SIZES[name] = recipes.SizeDefaults(**size)
from megatron_dscoder.training import train
sys.exit(train.cli(sys.argv[4:]))
"""


def run_tool(main, argv: list[str]) -> None:
    status = main(argv)
    if status:
        raise SystemExit(f"failed ({status}): {' '.join(argv)}")


def train(scale, argv: list[str], log: Path) -> None:
    """One training run in its own process (the real entry point), its log kept in ``log``;
    ``scale`` names the model (``model``, ``arch``) and the size's ``lr`` and batch."""
    if scale.arch is None:
        cmd = [sys.executable, "-m", "megatron_dscoder.pretrain", "--model", scale.model, *argv]
    else:
        size = dict(lr=scale.lr, global_batch_size=scale.global_batch_size, lr_warmup_iters=0)
        cmd = [sys.executable, "-c", _LAUNCH, scale.model, repr(scale.arch), repr(size)]
        cmd += ["--model", scale.model, *argv]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}); see {log}")


def train_argv(
    global_batch_size: int,
    out: Path,
    tag: str,
    data: Path,
    tok: Path,
    seed: int,
    iters: int,
    log_points: int,
) -> list[str]:
    """The flags every ablation's training run shares: data, batches, seed, ``iters`` iterations,
    one checkpoint at the end (``out/ckpt/TAG``), ``log_points`` loss records in
    ``out/metrics_TAG.jsonl``."""
    return ["--data-path", str(data), "--tokenizer-model", str(tok), "--split", "100,0,0",
            "--global-batch-size", str(global_batch_size),
            "--micro-batch-size", str(min(global_batch_size, 8)), "--seed", str(seed),
            "--train-iters", str(iters), "--save", str(out / "ckpt" / tag),
            "--save-interval", str(iters), "--log-interval", str(max(1, iters // log_points)),
            "--metrics-jsonl", str(out / f"metrics_{tag}.jsonl"),
            "--data-cache-path", str(out / "cache" / tag)]  # fmt: skip


def cosine_argv(seq_length: int, lr: float, iters: int) -> list[str]:
    """Pretraining's schedule in every ablation: 5 % warm-up, cosine to a tenth of the peak."""
    warmup = max(1, iters // 20)
    return ["--seq-length", str(seq_length), "--lr", str(lr), "--min-lr", str(lr / 10),
            "--lr-decay-style", "cosine", "--lr-warmup-iters", str(warmup)]  # fmt: skip


def loss_curve(path: Path) -> list[list[float]]:
    """[[iteration, lm loss], ...] from a ``--metrics-jsonl`` file (training data, FIM incl.)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["iteration"], r["lm_loss"]] for r in rows if r.get("lm_loss") is not None]
