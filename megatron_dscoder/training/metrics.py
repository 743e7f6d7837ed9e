"""Metric sinks: stdout, ``--metrics-jsonl``, TensorBoard and Weights & Biases.

One rank (the last, which holds the loss) writes; the others hold a disabled logger. W&B runs
offline unless credentials are present (``WANDB_API_KEY``) or ``WANDB_MODE`` says otherwise, so
a job never waits on the network; ``wandb sync`` uploads an offline run later.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
from pathlib import Path
from typing import Any

logger = logging.getLogger("megatron_dscoder")


def memory_stats() -> dict[str, float]:
    """GiB: allocated and peak on GPU; resident set (current and peak) on CPU."""
    import torch

    gib = float(1 << 30)
    if torch.cuda.is_available():
        return {
            "mem_allocated_gib": torch.cuda.memory_allocated() / gib,
            "mem_peak_gib": torch.cuda.max_memory_allocated() / gib,
        }
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mem_rss_gib": rss_pages * os.sysconf("SC_PAGE_SIZE") / gib,
        "mem_peak_rss_gib": peak_kib * 1024 / gib,
    }


class MetricsLogger:
    """Fans each record out to the enabled sinks; ``close()`` flushes them."""

    def __init__(
        self,
        *,
        enabled: bool,
        jsonl_path: str | None = None,
        tensorboard_dir: str | None = None,
        wandb_project: str | None = None,
        wandb_exp_name: str | None = None,
        wandb_save_dir: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self._file = self._tb = self._wandb = None
        if not enabled:
            return
        if jsonl_path:
            Path(jsonl_path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl_path, "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=tensorboard_dir)
        if wandb_project:
            self._wandb = _start_wandb(
                wandb_project, wandb_exp_name, wandb_save_dir, run_config or {}
            )

    def log(self, record: dict[str, Any], step: int) -> None:
        """Emit one record; ``step`` is the iteration it belongs to."""
        if not self.enabled:
            return
        logger.info(" | ".join(f"{k} {_fmt(v)}" for k, v in record.items()))
        scalars = {
            k: float(v)
            for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "iteration"
        }
        if self._file is not None:
            safe = {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in record.items()
            }
            self._file.write(json.dumps(safe) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def update_config(self, values: dict[str, Any]) -> None:
        """Record facts that appear during the run (e.g. checkpoint paths) in the W&B config."""
        if self._wandb is not None:
            self._wandb.config.update(values, allow_val_change=True)

    def close(self) -> None:
        """Flush and close every sink."""
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._file = self._tb = self._wandb = None


def _start_wandb(project: str, name: str | None, save_dir: str | None, run_config: dict[str, Any]):
    import wandb

    mode = os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline"
    )
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        name=name,
        dir=save_dir,
        mode=mode,
        config=run_config,
        settings=wandb.Settings(silent=True, console="off"),
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
