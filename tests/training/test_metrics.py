"""The sink list: a run's logging settings choose the sinks; every record reaches each of them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from megatron_dscoder.config.run import LoggingConfig
from megatron_dscoder.training import metrics
from megatron_dscoder.training.metrics import MetricsLogger, sinks_for


def test_settings_choose_the_sinks(tmp_path: Path) -> None:
    assert [type(s) for s in sinks_for(LoggingConfig(), {})] == [metrics.StdoutSink]
    log = LoggingConfig(metrics_jsonl=str(tmp_path / "m.jsonl"), tensorboard_dir=str(tmp_path))
    sinks = sinks_for(log, {})
    assert [type(s) for s in sinks] == [
        metrics.StdoutSink,
        metrics.JsonlSink,
        metrics.TensorBoardSink,
    ]
    MetricsLogger(sinks).close()


class _ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[dict, dict, int]] = []
        self.closed = 0

    def log(self, record: dict, scalars: dict, step: int) -> None:
        self.records.append((record, scalars, step))

    def close(self) -> None:
        self.closed += 1


def test_a_new_sink_is_one_entry_in_the_list(tmp_path: Path, monkeypatch) -> None:
    seen = _ListSink()
    monkeypatch.setattr(metrics, "SINKS", [*metrics.SINKS, (lambda log: True, lambda log, _: seen)])
    jsonl = tmp_path / "m.jsonl"
    logger = MetricsLogger(sinks_for(LoggingConfig(metrics_jsonl=str(jsonl)), {}))
    logger.log({"iteration": 3, "lm_loss": 2.5, "grad_norm": math.nan, "skipped": False}, step=3)
    logger.close()
    logger.close()
    record, scalars, step = seen.records[0]
    assert step == 3 and record["lm_loss"] == 2.5
    assert scalars == {"lm_loss": 2.5, "grad_norm": scalars["grad_norm"]}  # no iteration, no bool
    assert math.isnan(scalars["grad_norm"]) and seen.closed == 1
    assert json.loads(jsonl.read_text()) == {
        "iteration": 3,
        "lm_loss": 2.5,
        "grad_norm": None,
        "skipped": False,
    }


def test_wandb_mode_follows_the_key_at_run_time(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    base = {"HOME": str(home)}
    assert metrics.wandb_mode(base)[0] == "offline"
    assert metrics.wandb_mode({**base, "WANDB_API_KEY": "k" * 40})[0] == "online"
    # The user's WANDB_MODE wins both ways.
    assert metrics.wandb_mode({**base, "WANDB_API_KEY": "k", "WANDB_MODE": "offline"})[0] == (
        "offline"
    )
    assert metrics.wandb_mode({**base, "WANDB_MODE": "disabled"})[0] == "disabled"
    # `wandb login` stores the key in ~/.netrc under W&B's host (or WANDB_BASE_URL's).
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    (home / ".netrc").chmod(0o600)
    assert metrics.wandb_mode(base) == ("online", "netrc holds a W&B key")
    assert metrics.wandb_mode({**base, "WANDB_BASE_URL": "https://wandb.example.org"})[0] == (
        "offline"
    )
    other = tmp_path / "other-netrc"
    other.write_text("machine github.com login u password p\n")
    other.chmod(0o600)
    assert metrics.wandb_mode({**base, "NETRC": str(other)})[0] == "offline"
    other.write_text("machine wandb.example.org login u password p\n")
    assert (
        metrics.wandb_mode(
            {**base, "NETRC": str(other), "WANDB_BASE_URL": "https://wandb.example.org"}
        )[0]
        == "online"
    )
    # An unreadable netrc is no key, not a crash.
    other.write_text("machine wandb.example.org login\n")
    assert (
        metrics.wandb_mode(
            {**base, "NETRC": str(other), "WANDB_BASE_URL": "https://wandb.example.org"}
        )[0]
        == "offline"
    )
