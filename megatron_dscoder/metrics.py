"""Metric sinks. One rank (the last) writes; others hold a no-op logger."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger("megatron_dscoder")


class MetricsLogger:
    """Writes each iteration's record to stdout (logging) and, optionally, a JSONL file."""

    def __init__(self, jsonl_path: str | None, enabled: bool) -> None:
        self.enabled = enabled
        self._file = None
        if enabled and jsonl_path:
            Path(jsonl_path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl_path, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        """Emit one record (JSON-safe: NaN/inf become null in the file)."""
        if not self.enabled:
            return
        logger.info(" | ".join(f"{k} {_fmt(v)}" for k, v in record.items()))
        if self._file is not None:
            safe = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in record.items()}
            self._file.write(json.dumps(safe) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file sink."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
