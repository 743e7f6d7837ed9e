"""``make demo``: train the debug model with TP=2 + sequence parallelism on CPU, end to end.

    python -m megatron_dscoder.demo --output out/demo

Launches ``torchrun --nproc-per-node 2 -m megatron_dscoder.pretrain`` on mock data, streams its
progress, and reports the loss curve, which must fall.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("megatron_dscoder.demo")


def run_pretrain(out: Path, iters: int) -> Path:
    """Train ``debug`` with TP=2 + SP on two CPU processes; returns the metrics file."""
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "-m", "megatron_dscoder.pretrain", "--model", "debug", "--mock-data",
           "--tensor-model-parallel-size", "2", "--sequence-parallel",
           "--global-batch-size", "8", "--micro-batch-size", "2", "--seq-length", "128",
           "--train-iters", str(iters), "--lr", "3e-3", "--metrics-jsonl", str(metrics)]
    logger.info("running: %s", " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit status 1 if the loss did not fall."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="out/demo", help="folder for the run's artefacts")
    parser.add_argument("--train-iters", type=int, default=60)
    args = parser.parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    metrics = run_pretrain(out, args.train_iters)
    losses = [json.loads(line)["lm_loss"] for line in metrics.read_text().splitlines()]
    first, last = losses[0], losses[-1]
    logger.info("loss %.3f -> %.3f over %d iterations (TP=2 + SP, 2 CPU processes)",
                first, last, len(losses))
    logger.info("artefacts: %s", out)
    return 0 if last < 0.8 * first else 1


if __name__ == "__main__":
    sys.exit(main())
