"""Metric sinks: stdout, ``--metrics-jsonl``, TensorBoard and Weights & Biases, as a list.

One rank (the last, which holds the loss) writes; the others get no sinks. W&B runs offline
unless credentials are present (``WANDB_API_KEY``, or the netrc entry ``wandb login`` writes) or
``WANDB_MODE`` says otherwise, so a job without a key never waits on the network; ``wandb sync``
uploads an offline run later. The choice is made at run time, never baked into an image.

Adding a sink is two edits: a field for its flag in
:class:`~megatron_dscoder.config.run.LoggingConfig` (the flag is generated from it) and a class here
plus its line in :data:`SINKS`.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import resource
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from megatron_dscoder.config.run import LoggingConfig

logger = logging.getLogger("megatron_dscoder")


class Sink(Protocol):
    """Where records go. ``scalars`` are the record's finite-or-not numbers, by name."""

    def log(self, record: dict[str, Any], scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class StdoutSink:
    """One ``key value | ...`` line per record, through logging."""

    def log(self, record: dict[str, Any], scalars: dict[str, float], step: int) -> None:
        logger.info(" | ".join(f"{k} {_fmt(v)}" for k, v in record.items()))

    def close(self) -> None:
        pass


class JsonlSink:
    """One JSON object per record, flushed at once (non-finite numbers as null)."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any], scalars: dict[str, float], step: int) -> None:
        safe = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(safe) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """Every scalar under its own name, at the iteration."""

    def __init__(self, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=log_dir)

    def log(self, record: dict[str, Any], scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


def _netrc_has_key(env: Mapping[str, str]) -> bool:
    """Whether the netrc file W&B reads (``NETRC`` or ``~/.netrc``) holds its host's key."""
    path = Path(env.get("NETRC") or Path(env.get("HOME") or Path.home()) / ".netrc")
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except FileNotFoundError:
        return False
    except (OSError, netrc.NetrcParseError) as err:
        logger.warning("W&B: %s unreadable (%s); treated as no key", path, err)
        return False
    return bool(entry and entry[2])


def wandb_mode(env: Mapping[str, str]) -> tuple[str, str]:
    """(mode, why): ``WANDB_MODE`` when the user set it; else online with a key, offline without."""
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"], "WANDB_MODE is set"
    if env.get("WANDB_API_KEY"):
        return "online", "WANDB_API_KEY is set"
    if _netrc_has_key(env):
        return "online", "netrc holds a W&B key"
    return "offline", "no W&B key; `wandb sync` uploads the run later"


class WandbSink:
    """A W&B run (offline without credentials) whose config is the run's description."""

    def __init__(self, log: LoggingConfig, run_config: dict[str, Any]) -> None:
        import wandb

        mode, why = wandb_mode(os.environ)
        logger.info("W&B %s: %s", mode, why)
        if log.wandb_save_dir:
            Path(log.wandb_save_dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=log.wandb_project,
            name=log.wandb_exp_name,
            dir=log.wandb_save_dir,
            mode=mode,
            config=run_config,
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, record: dict[str, Any], scalars: dict[str, float], step: int) -> None:
        self._run.log(scalars, step=step)

    def update_config(self, values: dict[str, Any]) -> None:
        self._run.config.update(values, allow_val_change=True)

    def close(self) -> None:
        self._run.finish()


SINKS: list[tuple[Callable[[LoggingConfig], bool], Callable[[LoggingConfig, dict], Sink]]] = [
    (lambda log: True, lambda log, _: StdoutSink()),
    (lambda log: bool(log.metrics_jsonl), lambda log, _: JsonlSink(log.metrics_jsonl)),
    (lambda log: bool(log.tensorboard_dir), lambda log, _: TensorBoardSink(log.tensorboard_dir)),
    (lambda log: bool(log.wandb_project), WandbSink),
]
"""(enabled by the config?, factory) per sink, in the order records reach them."""


def sinks_for(log: LoggingConfig, run_config: dict[str, Any]) -> list[Sink]:
    """The sinks a run's logging settings ask for."""
    return [make(log, run_config) for enabled, make in SINKS if enabled(log)]


class MetricsLogger:
    """Fans each record out to its sinks; ``close()`` flushes them. No sinks: a no-op."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def log(self, record: dict[str, Any], step: int) -> None:
        """Emit one record; ``step`` is the iteration it belongs to."""
        scalars = {
            k: float(v)
            for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "iteration"
        }
        for sink in self.sinks:
            sink.log(record, scalars, step)

    def update_config(self, values: dict[str, Any]) -> None:
        """Record facts that appear during the run (e.g. checkpoint paths) where sinks keep a
        run config (W&B)."""
        for sink in self.sinks:
            if hasattr(sink, "update_config"):
                sink.update_config(values)

    def close(self) -> None:
        """Flush and close every sink (once)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()


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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
