"""The pretraining loop: data -> parallel step -> metrics, for ``train_iters`` iterations."""

from __future__ import annotations

import time

from megatron.core import parallel_state
from megatron.core.optimizer import MegatronOptimizer

from megatron_dscoder.config import RunConfig
from megatron_dscoder.metrics import MetricsLogger
from megatron_dscoder.training.mock_data import MockTokens, microbatches
from megatron_dscoder.training.step import train_step


def train(run: RunConfig, model: list, optimizer: MegatronOptimizer,
          metrics: MetricsLogger) -> list[float]:
    """Run the configured iterations; returns the per-iteration loss (NaN off the last stage)."""
    train_cfg = run.train
    vocab = run.arch.vocab_size
    dataset = MockTokens(vocab, train_cfg.seq_length, train_cfg.seed)
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    losses = []
    for iteration in range(1, train_cfg.train_iters + 1):
        start = time.perf_counter()
        data = microbatches(dataset, start_sample=(iteration - 1) * train_cfg.global_batch_size,
                            global_batch_size=train_cfg.global_batch_size,
                            micro_batch_size=train_cfg.micro_batch_size,
                            dp_rank=dp_rank, dp_size=dp_size)
        result = train_step(model, optimizer, data, num_microbatches=run.num_microbatches,
                            seq_length=train_cfg.seq_length,
                            micro_batch_size=train_cfg.micro_batch_size)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        losses.append(result.lm_loss)
        metrics.log({
            "iteration": iteration,
            "lm_loss": result.lm_loss,
            "grad_norm": result.grad_norm,
            "lr": optimizer.param_groups[0]["lr"],
            "elapsed_ms": round(elapsed_ms, 3),
        })
    return losses
