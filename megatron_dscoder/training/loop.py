"""The pretraining loop: data -> parallel step -> metrics -> evaluation -> checkpoints.

Everything that decides what iteration ``i`` computes — the samples (a function of consumed
samples), the learning rate (a function of ``i``), the weights, optimizer and RNG states (from the
checkpoint) — is restored on resume, so an interrupted run continues bit-for-bit on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from megatron.core import parallel_state

from megatron_dscoder.checkpointing import async_save
from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.checkpointing.formats import SaveFormat
from megatron_dscoder.config.run import RunConfig
from megatron_dscoder.datasets.gpt import MicroBatchSampler, loader
from megatron_dscoder.model.flops import MFU_CONVENTION, device_peak_tflops, flops_per_iteration
from megatron_dscoder.parallel.distributed import any_rank
from megatron_dscoder.runtime.manual_gc import ManualGC
from megatron_dscoder.runtime.stopping import StopConditions
from megatron_dscoder.training import finite
from megatron_dscoder.training.build import params_synced
from megatron_dscoder.training.metrics import MetricsLogger, memory_stats
from megatron_dscoder.training.schedule import LRSchedule
from megatron_dscoder.training.step import StepResult, evaluate, train_step

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive NaN/inf losses; a checkpoint of the last good state was written."""


@dataclass
class TrainState:
    """Counters saved in every checkpoint."""

    iteration: int = 0
    consumed_samples: int = 0
    skipped_iterations: int = 0
    run_id: str = ""
    """Identity of the run (inherited on resume); recorded in every checkpoint."""


class TimedIterator:
    """Counts the seconds the training step spends waiting for data."""

    def __init__(self, iterator: Iterator) -> None:
        self._it, self.wait_s = iterator, 0.0

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self):
        start = time.perf_counter()
        item = next(self._it)
        self.wait_s += time.perf_counter() - start
        return item


def schedule_of(run: RunConfig) -> LRSchedule:
    """The run's LR and weight-decay schedule (applied to every optimizer parameter group)."""
    t = run.train
    return LRSchedule(
        style=t.lr_decay_style,
        peak_lr=t.lr,
        warmup_iters=t.lr_warmup_iters,
        train_iters=t.train_iters,
        weight_decay=t.weight_decay,
        min_lr=t.min_lr,
    )


def run_metadata(run: RunConfig) -> dict:
    """The run's description stored in each checkpoint's run_config.json (and in W&B)."""
    return {
        "model": run.model,
        "arch": dataclasses.asdict(run.arch),
        "tokenizer": run.data.tokenizer_model,
        "train": dataclasses.asdict(run.train),
        "parallel": dataclasses.asdict(run.parallel),
        "data": dataclasses.asdict(run.data),
        "performance": dataclasses.asdict(run.performance),
    }


@dataclass
class _Window:
    """Iterations since the last log line and when they started, for per-iteration time and the
    share of it spent waiting for data. An evaluation or a save is not counted as step time."""

    start: float
    iters: int = 0
    wait_at_start: float = 0.0

    def rates(self, wait_s: float) -> tuple[float, float]:
        """(seconds per iteration, share of the window spent waiting for data)."""
        elapsed = time.perf_counter() - self.start
        return elapsed / self.iters, (wait_s - self.wait_at_start) / max(elapsed, 1e-9)

    def restart(self, wait_s: float) -> None:
        self.start, self.iters, self.wait_at_start = time.perf_counter(), 0, wait_s

    def skip_pause(self) -> None:
        self.start = time.perf_counter()


class Trainer:
    """Owns the loop's state; built by ``pretrain.py`` from already-constructed parts."""

    def __init__(
        self,
        run: RunConfig,
        model: list,
        optimizer,
        datasets: tuple,
        metrics: MetricsLogger,
        state: TrainState,
        started: float | None = None,
    ) -> None:
        """``started`` (``time.monotonic()`` at launch) is where ``--exit-duration-in-mins``
        counts from; default: now."""
        self.run, self.model, self.optimizer, self.metrics, self.state = (
            run,
            model,
            optimizer,
            metrics,
            state,
        )
        self.train_ds, self.valid_ds = datasets
        self.schedule = schedule_of(run)
        t = run.train
        self._shape = dict(
            num_microbatches=run.num_microbatches,
            seq_length=t.seq_length,
            micro_batch_size=t.micro_batch_size,
        )
        world = torch.distributed.get_world_size()
        self._flops_per_iter = flops_per_iteration(run.arch, t.global_batch_size, t.seq_length)
        self._world = world
        self._peak = run.logging.peak_tflops or device_peak_tflops()
        logger.info(
            "tflops_per_gpu and mfu count model FLOPs in %s; peak %s TFLOP/s per GPU",
            MFU_CONVENTION,
            f"{self._peak:g}" if self._peak else "unknown (no mfu; set --peak-tflops)",
        )
        self._started = time.monotonic() if started is None else started
        perf = run.performance
        self._gc = ManualGC(perf.manual_gc, perf.manual_gc_interval)

    def _iterator(self, dataset, consumed: int, total: int) -> TimedIterator:
        sampler = MicroBatchSampler(
            total_samples=total,
            consumed_samples=consumed,
            micro_batch_size=self.run.train.micro_batch_size,
            dp_rank=parallel_state.get_data_parallel_rank(),
            dp_size=parallel_state.get_data_parallel_world_size(),
        )
        return TimedIterator(loader(dataset, sampler, self.run.data.num_workers))

    def save(self) -> None:
        """Collective: checkpoint the current state under ``--save``."""
        with self._between_iterations():
            self._save()

    @contextlib.contextmanager
    def _between_iterations(self) -> Iterator[None]:
        """Parameters gathered (``--overlap-param-gather`` defers that to the next forward) and,
        with ``--manual-gc``, a collection before and after."""
        self._gc.collect()
        with params_synced(self.model):
            yield
        self._gc.collect()

    def _save(self) -> None:
        ckpt = self.run.checkpoint
        if any_rank(not finite.weights_finite(self.model))[0]:
            raise NonFiniteLossError(
                f"non-finite weights at iteration {self.state.iteration}: no checkpoint written "
                f"(the latest under {ckpt.save} is kept)"
            )
        path = checkpointing.save_checkpoint(
            ckpt.save,
            iteration=self.state.iteration,
            model=self.model,
            optimizer=self.optimizer,
            run_meta={
                **run_metadata(self.run),
                "run_id": self.state.run_id,
                "consumed_samples": self.state.consumed_samples,
            },
            common={"train_state": dataclasses.asdict(self.state)},
            keep_last=ckpt.keep_checkpoints,
            fmt=SaveFormat.of(
                fully_reshardable=ckpt.ckpt_fully_reshardable, async_save=ckpt.async_save
            ),
        )
        self.metrics.update_config({"last_checkpoint": str(path)})

    def train(self) -> TrainState:
        """Run until ``train_iters`` (or a stop condition); returns the final counters."""
        t = self.run.train
        stop = StopConditions(
            exit_signal_handler=t.exit_signal_handler,
            exit_duration_in_mins=t.exit_duration_in_mins,
            started=self._started,
        )
        try:
            with self._gc:
                state = self._train(stop)
            checkpointing.finalize_saves(blocking=True)  # --async-save: the last one is complete
            return state
        finally:
            async_save.abort()  # a failed run leaves its unfinished save unpromoted
            stop.close()

    def _train(self, stop: StopConditions) -> TrainState:
        t, state = self.run.train, self.state
        data = self._iterator(
            self.train_ds, state.consumed_samples, t.train_iters * t.global_batch_size
        )
        window = _Window(time.perf_counter())
        nonfinite_in_row = 0
        while state.iteration < t.train_iters:
            iteration = state.iteration + 1
            lr = self.schedule.apply(self.optimizer, iteration)
            result = train_step(
                self.model,
                self.optimizer,
                data,
                **self._shape,
                poison=iteration in t.inject_nonfinite_loss_iters,
                poison_grad=iteration in t.inject_nonfinite_grad_iters,
            )
            state.iteration = iteration
            state.consumed_samples += t.global_batch_size
            window.iters += 1
            nonfinite_in_row = self._count_nonfinite(result, iteration, nonfinite_in_row)
            if iteration % self.run.logging.log_interval == 0 or iteration == t.train_iters:
                self._log(iteration, result, lr, *window.rates(data.wait_s))
                window.restart(data.wait_s)
            self._gc.step(iteration)
            if self.run.logging.eval_interval and iteration % self.run.logging.eval_interval == 0:
                self._evaluate(iteration)
                window.skip_pause()
            saved = self._periodic_save(iteration)
            if saved:
                window.skip_pause()
            reason = self._stop_reason(stop, iteration)
            if reason and iteration < t.train_iters:
                return self._stop_early(reason, iteration, saved)
        if self.run.checkpoint.save and not self._save_due(state.iteration):
            self.save()  # the run's end, unless its last iteration was a periodic save
        return state

    def _count_nonfinite(self, result: StepResult, iteration: int, in_row: int) -> int:
        """Non-finite updates in a row after this one; stops the run at --max-nonfinite-iters."""
        if not result.skipped:
            return 0
        self.state.skipped_iterations += 1
        in_row += 1
        logger.warning(
            "iteration %d: non-finite %s, update skipped (%d in a row)",
            iteration,
            result.reason,
            in_row,
        )
        if in_row >= self.run.train.max_nonfinite_iters:
            self._stop_on_nonfinite(in_row)
        return in_row

    def _save_due(self, iteration: int) -> bool:
        """A periodic checkpoint falls on ``iteration`` (``--save-interval``)."""
        ckpt = self.run.checkpoint
        return bool(ckpt.save and ckpt.save_interval and iteration % ckpt.save_interval == 0)

    def _periodic_save(self, iteration: int) -> bool:
        """Promote a finished background save, then save if one is due; whether it saved."""
        if self.run.checkpoint.async_save:  # promoted as soon as every rank wrote it
            checkpointing.finalize_saves(blocking=False)
        if not self._save_due(iteration):
            return False
        self.save()
        return True

    def _stop_reason(self, stop: StopConditions, iteration: int) -> str | None:
        """Why every rank stops after ``iteration`` (collective), or None to go on."""
        reason = stop.reason()
        exit_interval = self.run.train.exit_interval
        if exit_interval and iteration % exit_interval == 0:
            reason = reason or "exit interval reached"
        return reason

    def _stop_early(self, reason: str, iteration: int, saved: bool) -> TrainState:
        """Stop before --train-iters, with a checkpoint of this iteration when there is --save."""
        save = self.run.checkpoint.save
        if save and not saved:
            self.save()
        kept = "checkpoint saved" if save else "nothing saved (no --save)"
        logger.info("%s: stopping after iteration %d, %s", reason, iteration, kept)
        return self.state

    def _stop_on_nonfinite(self, count: int) -> None:
        # Skipped updates left the weights at the last good state: keep it, then stop.
        save = self.run.checkpoint.save
        if save:
            self.save()
            checkpointing.finalize_saves(blocking=True)
        kept = f"last good state saved under {save}" if save else "nothing saved (no --save)"
        raise NonFiniteLossError(
            f"{count} consecutive non-finite losses at iteration {self.state.iteration}; {kept}"
        )

    def _log(
        self, iteration: int, result, lr: float, seconds_per_iter: float, data_wait_fraction: float
    ) -> None:
        t = self.run.train
        tokens_per_s = t.global_batch_size * t.seq_length / seconds_per_iter
        tflops = self._flops_per_iter / seconds_per_iter / self._world / 1e12
        remaining = (t.train_iters - iteration) * seconds_per_iter
        record = {
            "iteration": iteration,
            "lm_loss": result.lm_loss,
            "grad_norm": result.grad_norm,
            "lr": lr,
            "elapsed_ms": round(seconds_per_iter * 1000.0, 3),
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_gpu": tokens_per_s / self._world,
            "tflops_per_gpu": tflops,
            "consumed_tokens": self.state.consumed_samples * t.seq_length,
            "skipped_iterations": self.state.skipped_iterations,
            "data_wait_fraction": data_wait_fraction,
            "eta_s": round(remaining, 1),
            **memory_stats(),
        }
        if self._peak:
            record["mfu"] = tflops / self._peak
        self.metrics.log(record, step=iteration)

    def _evaluate(self, iteration: int) -> None:
        if self.valid_ds is None:
            return
        t, log_cfg = self.run.train, self.run.logging
        total = log_cfg.eval_iters * t.global_batch_size
        data = self._iterator(self.valid_ds, 0, total)
        with self._between_iterations():
            loss = evaluate(self.model, data, eval_iters=log_cfg.eval_iters, **self._shape)
        if loss is not None:
            ppl = math.exp(min(loss, 50.0))
            self.metrics.log(
                {"iteration": iteration, "val_loss": loss, "val_ppl": ppl}, step=iteration
            )
