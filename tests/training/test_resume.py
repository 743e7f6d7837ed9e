"""Exact resume: SIGKILL mid-training, resume from the last checkpoint, same losses bitwise.

The SIGKILL goes to torchrun alone: its workers must die with it (no orphan trains on). A
SIGTERM to the workers with ``--exit-signal-handler`` checkpoints the next iteration boundary and
exits 0; resuming from it is bitwise too.

The layouts cover fp32 TP=2+SP and PP=2, and bf16 mixed precision with the distributed
optimizer (its fp32 main-weight shards and Adam state must come back exactly). Also resharding:
a checkpoint saved at TP=2, PP=1 resumes at TP=1, PP=2 with the same loss as the uninterrupted
run within 1e-5 relative. All runs are the real CLI under torchrun (gloo, CPU).
"""

from __future__ import annotations

import math
import shutil
import signal

import pytest

from tests.launch import WORKERS, kill_when, read_jsonl, signal_when, torchrun, torchrun_popen

ITERS = 12
COMMON = (
    f"--model debug --mock-data --train-iters {ITERS} --seq-length 64 --seed 11 "
    "--global-batch-size 8 --log-interval 1 --num-workers 1"
)
LAYOUTS = {
    "tp2": "--tensor-model-parallel-size 2 --sequence-parallel",
    "pp2": "--pipeline-model-parallel-size 2",
    # bf16 weights, fp32 main weights sharded over DP=2 by the distributed optimizer.
    "bf16_dp2_distopt": "--bf16 --use-distributed-optimizer",
}


def losses(path) -> dict[int, float]:
    """iteration -> loss; a resumed run's records overwrite the killed run's (they must agree)."""
    out: dict[int, float] = {}
    for r in read_jsonl(path):
        if "lm_loss" in r:
            assert out.setdefault(r["iteration"], r["lm_loss"]) == r["lm_loss"], r
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    args = [str(out)]
    for name, flags in LAYOUTS.items():
        args += [f"full_{name}", f"{COMMON} {flags}"]
    # A NaN gradient element on rank 0 only (finite loss): every rank skips the same update.
    args += ["nan_grad_tp2", f"{COMMON} {LAYOUTS['tp2']} "
             "--inject-nonfinite-grad-iters 3"]  # fmt: skip
    torchrun(2, WORKERS / "layouts.py", *args)  # uninterrupted references, one launch
    killed_at = {}
    for name, flags in LAYOUTS.items():
        ckpt, metrics = out / f"ckpt_{name}", out / f"resumed_{name}.jsonl"
        argv = [
            *f"{COMMON} {flags} --save {ckpt} --load {ckpt} --save-interval 4".split(),
            "--metrics-jsonl",
            str(metrics),
        ]
        proc = torchrun_popen(2, argv, out / f"killed_{name}.log")
        killed_at[name] = kill_when(proc, metrics, iteration=6)
    term_ckpt, term_metrics = out / "ckpt_term", out / "resumed_term.jsonl"
    term_flags = (
        f"{COMMON} {LAYOUTS['tp2']} --save {term_ckpt} --load {term_ckpt} --save-interval 4"
    )
    argv = [*f"{term_flags} --exit-signal-handler".split(), "--metrics-jsonl", str(term_metrics)]
    proc = torchrun_popen(2, argv, out / "term.log")
    term = signal_when(proc, term_metrics, 6, signal.SIGTERM)
    term_saved = (term_ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
    shutil.copytree(out / "ckpt_tp2", out / "ckpt_reshard")
    args = [str(out)]
    for name, flags in LAYOUTS.items():
        ckpt = out / f"ckpt_{name}"
        args += [
            f"resumed_{name}",
            f"{COMMON} {flags} --save {ckpt} --load {ckpt} --save-interval 4",
        ]
    args += ["reshard", f"{COMMON} {LAYOUTS['pp2']} --load {out / 'ckpt_reshard'}"]
    args += ["resumed_term", term_flags]
    torchrun(2, WORKERS / "layouts.py", *args)  # all resumes, one launch
    return out, killed_at, (*term, int(term_saved))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sigkill_and_resume_is_bitwise(runs, layout):
    out, killed_at, _ = runs
    assert 6 <= killed_at[layout] < ITERS  # killed mid-training, after the checkpoint at 4
    full, resumed = losses(out / f"full_{layout}.jsonl"), losses(out / f"resumed_{layout}.jsonl")
    assert sorted(resumed) == list(range(1, ITERS + 1))
    assert resumed == full  # bitwise, including the iterations logged twice around the kill


def test_reshard_tp2_to_pp2_continues_the_same_loss(runs):
    out, _, _ = runs
    full = losses(out / "full_tp2.jsonl")
    resharded = losses(out / "reshard.jsonl")
    assert min(resharded) == 5  # resumed from the iteration-4 checkpoint
    for it, value in resharded.items():
        assert value == pytest.approx(full[it], rel=1e-5), it


def test_sigterm_checkpoints_the_next_iteration_exits_0_and_resumes_bitwise(runs):
    out, _, (signalled_at, status, saved) = runs
    assert status == 0  # torchrun: every worker exited 0
    assert saved in (signalled_at, signalled_at + 1)  # the iteration boundary after the signal
    assert saved < ITERS
    full, resumed = losses(out / "full_tp2.jsonl"), losses(out / "resumed_term.jsonl")
    assert sorted(resumed) == list(range(1, ITERS + 1))
    assert resumed == full


def test_nan_gradient_on_one_rank_skips_the_update_on_all(runs):
    out, _, _ = runs
    records = {r["iteration"]: r for r in read_jsonl(out / "nan_grad_tp2.jsonl")}
    reference = losses(out / "full_tp2.jsonl")
    assert [records[i]["lm_loss"] for i in (1, 2, 3)] == [reference[i] for i in (1, 2, 3)]
    assert records[3]["grad_norm"] is None and records[3]["skipped_iterations"] == 1
    assert records[4]["lm_loss"] != reference[4]  # the update of iteration 3 was not applied
    assert math.isfinite(records[4]["lm_loss"]) and math.isfinite(records[4]["grad_norm"])
