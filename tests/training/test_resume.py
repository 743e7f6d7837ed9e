"""Exact resume: SIGKILL mid-training, resume from the last checkpoint, same losses bitwise.

The SIGKILL goes to torchrun alone: its workers must die with it (no orphan trains on). A
SIGTERM to the workers with ``--exit-signal-handler`` checkpoints the next iteration boundary and
exits 0; resuming from it is bitwise too.

The layouts cover fp32 TP=2+SP and PP=2, and bf16 mixed precision with the distributed
optimizer in both of its checkpoint formats: the routine ``dp_reshardable`` one, and the
``--ckpt-fully-reshardable`` one written in the background (``--async-save``); the fp32 main
weight shards and Adam state must come back exactly. Also resharding: a checkpoint saved at
TP=2, PP=1 resumes at TP=1, PP=2 with the same loss as the uninterrupted run within 1e-5
relative; a fully reshardable distributed-optimizer checkpoint resumes at TP=2; a
``dp_reshardable`` one at another data-parallel size (DP=2 -> 1), and is refused, saying what to
do, at another TP or without the distributed optimizer. All runs are the real CLI under torchrun
(gloo, CPU).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.config import cli as arguments
from megatron_dscoder.training import resume
from tests.launch import (
    REPO,
    WORKERS,
    kill_when,
    read_jsonl,
    signal_when,
    torchrun,
    torchrun_popen,
)

ITERS = 12
COMMON = (
    f"--model debug --mock-data --train-iters {ITERS} --seq-length 64 --seed 11 "
    "--global-batch-size 8 --log-interval 1 --num-workers 1"
)
DISTOPT = "--bf16 --use-distributed-optimizer"
LAYOUTS = {
    "tp2": "--tensor-model-parallel-size 2 --sequence-parallel",
    "pp2": "--pipeline-model-parallel-size 2",
    # bf16 weights, fp32 main weights sharded over DP=2 by the distributed optimizer.
    "bf16_dp2_distopt": DISTOPT,
    "bf16_dp2_distopt_full_async": f"{DISTOPT} --ckpt-fully-reshardable --async-save",
}
REFERENCE = {name: name for name in LAYOUTS} | {"bf16_dp2_distopt_full_async": "bf16_dp2_distopt"}
"""The uninterrupted run each layout must reproduce (the checkpoint format changes no math)."""
KILL_AT = {name: 6 for name in LAYOUTS} | {"bf16_dp2_distopt_full_async": 9}
"""After the save at 8 began, the background save of 4 is complete (one save in flight)."""


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
    for name in sorted(set(REFERENCE.values())):
        args += [f"full_{name}", f"{COMMON} {LAYOUTS[name]}"]
    # A NaN gradient element on rank 0 only (finite loss): every rank skips the same update.
    args += ["nan_grad_tp2", f"{COMMON} {LAYOUTS['tp2']} --inject-nonfinite-grad-iters 3"]
    torchrun(2, WORKERS / "layouts.py", *args)  # uninterrupted references, one launch

    def killed(name: str) -> tuple[int, int]:
        ckpt, metrics = out / f"ckpt_{name}", out / f"resumed_{name}.jsonl"
        argv = [
            *f"{COMMON} {LAYOUTS[name]} --save {ckpt} --load {ckpt} --save-interval 4".split(),
            "--metrics-jsonl",
            str(metrics),
        ]
        proc = torchrun_popen(2, argv, out / f"killed_{name}.log")
        at = kill_when(proc, metrics, iteration=KILL_AT[name])
        return at, int((ckpt / "latest_checkpointed_iteration.txt").read_text())

    term_ckpt, term_metrics = out / "ckpt_term", out / "resumed_term.jsonl"
    term_flags = (
        f"{COMMON} {LAYOUTS['tp2']} --save {term_ckpt} --load {term_ckpt} --save-interval 4"
    )

    def terminated() -> tuple[int, int]:
        argv = [*f"{term_flags} --exit-signal-handler".split(), "--metrics-jsonl"]
        proc = torchrun_popen(2, [*argv, str(term_metrics)], out / "term.log")
        return signal_when(proc, term_metrics, 6, signal.SIGTERM)

    # Two interrupted runs at a time: each is stopped by the iteration its own metrics log,
    # whatever the other is doing, so pairing them changes only the wall time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        term_future = pool.submit(terminated)
        stopped = dict(zip(LAYOUTS, pool.map(killed, LAYOUTS), strict=True))
        term = term_future.result()
    killed_at = {name: at for name, (at, _) in stopped.items()}
    tracker = {name: latest for name, (_, latest) in stopped.items()}
    term_saved = (term_ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
    for src, dst in (
        ("tp2", "reshard"),
        ("bf16_dp2_distopt", "dp1"),
        ("bf16_dp2_distopt_full_async", "fully_to_tp2"),
    ):
        shutil.copytree(out / f"ckpt_{src}", out / f"ckpt_{dst}")
    args = [str(out)]
    for name, flags in LAYOUTS.items():
        ckpt = out / f"ckpt_{name}"
        args += [
            f"resumed_{name}",
            f"{COMMON} {flags} --save {ckpt} --load {ckpt} --save-interval 4",
        ]
    args += ["reshard", f"{COMMON} {LAYOUTS['pp2']} --load {out / 'ckpt_reshard'}"]
    args += ["fully_to_tp2", f"{COMMON} {DISTOPT} --tensor-model-parallel-size 2 --load "]
    args[-1] += str(out / "ckpt_fully_to_tp2")
    args += ["resumed_term", term_flags]
    torchrun(2, WORKERS / "layouts.py", *args)  # all resumes, one launch
    # DP=2 -> 1 in one process, and the same checkpoint without the distributed optimizer.
    results = out / "one_process.json"
    dp1 = f"{COMMON} {DISTOPT} --load {out / 'ckpt_dp1'} --metrics-jsonl {out / 'dp1.jsonl'}"
    no_distopt = f"{COMMON} --bf16 --load {out / 'ckpt_dp1'}"
    cmd = [sys.executable, str(WORKERS / "runs.py"), str(results), "dp1", dp1]
    proc = subprocess.run(
        [*cmd, "no_distopt", no_distopt], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    outcome = json.loads(results.read_text())
    return out, killed_at, tracker, (*term, int(term_saved)), outcome


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sigkill_and_resume_is_bitwise(runs, layout):
    out, killed_at, tracker, _, _ = runs
    assert KILL_AT[layout] <= killed_at[layout] < ITERS  # killed mid-training
    assert tracker[layout] >= 4  # ... after a checkpoint was complete
    full = losses(out / f"full_{REFERENCE[layout]}.jsonl")
    resumed = losses(out / f"resumed_{layout}.jsonl")
    assert sorted(resumed) == list(range(1, ITERS + 1))
    assert resumed == full  # bitwise, including the iterations logged twice around the kill


def test_checkpoints_record_their_optimizer_format(runs):
    out = runs[0]
    expected = {
        "tp2": None,
        "bf16_dp2_distopt": "dp_reshardable",
        "bf16_dp2_distopt_full_async": "fully_reshardable",
    }
    for layout, fmt in expected.items():
        ckpt = out / f"ckpt_{layout}" / "iter_0000012"
        assert checkpointing.read_checkpoint_metadata(ckpt)["optimizer_format"] == fmt, layout
        manifest = json.loads((ckpt / "checksums.json").read_text())["files"]
        on_disk = {p.name for p in ckpt.iterdir() if p.name != "checksums.json"}
        assert set(manifest) == on_disk  # every file the format writes is covered
    written = {p.name for p in (out / "ckpt_bf16_dp2_distopt" / "iter_0000012").glob("*.distcp")}
    assert {name.split("_")[2] for name in written} == {"0", "1"}  # both DP ranks write


def test_reshard_tp2_to_pp2_continues_the_same_loss(runs):
    out = runs[0]
    full = losses(out / "full_tp2.jsonl")
    resharded = losses(out / "reshard.jsonl")
    assert min(resharded) == 5  # resumed from the iteration-4 checkpoint
    for it, value in resharded.items():
        assert value == pytest.approx(full[it], rel=1e-5), it


@pytest.mark.parametrize("case", ["fully_to_tp2", "dp1"])
def test_distributed_optimizer_checkpoint_at_another_layout(runs, case):
    """--ckpt-fully-reshardable: DP=2 -> TP=2 (DP=1); dp_reshardable: DP=2 -> DP=1."""
    out, _, tracker, _, outcome = runs
    if case == "dp1":
        assert outcome["dp1"]["status"] == "ok", outcome["dp1"]
    full = losses(out / "full_bf16_dp2_distopt.jsonl")
    moved = losses(out / f"{case}.jsonl")
    assert moved and min(moved) > 4  # resumed from a checkpoint, not from scratch
    for it, value in moved.items():
        assert value == pytest.approx(full[it], rel=1e-4), it  # bf16: another reduction order


def test_dp_reshardable_checkpoint_refuses_another_tp_or_no_distributed_optimizer(runs):
    out, *_, outcome = runs
    message = outcome["no_distopt"]["message"]
    assert outcome["no_distopt"]["status"] == "error", outcome
    assert "dp_reshardable" in message and "--no-load-optim" in message, message
    assert "--ckpt-fully-reshardable" in message and "no distributed optimizer" in message
    argv = f"{COMMON} {DISTOPT} --tensor-model-parallel-size 2 --load {out / 'ckpt_dp1'}"
    _, run = arguments.parse(argv.split(), 2)
    with pytest.raises(checkpointing.CheckpointError, match="only at tensor-model-parallel-size 1"):
        resume.preflight(run)  # before any process group or model


def test_sigterm_checkpoints_the_next_iteration_exits_0_and_resumes_bitwise(runs):
    out, _, _, (signalled_at, status, saved), _ = runs
    assert status == 0  # torchrun: every worker exited 0
    assert saved in (signalled_at, signalled_at + 1)  # the iteration boundary after the signal
    assert saved < ITERS
    full, resumed = losses(out / "full_tp2.jsonl"), losses(out / "resumed_term.jsonl")
    assert sorted(resumed) == list(range(1, ITERS + 1))
    assert resumed == full


def test_nan_gradient_on_one_rank_skips_the_update_on_all(runs):
    out, *_ = runs
    records = {r["iteration"]: r for r in read_jsonl(out / "nan_grad_tp2.jsonl")}
    reference = losses(out / "full_tp2.jsonl")
    assert [records[i]["lm_loss"] for i in (1, 2, 3)] == [reference[i] for i in (1, 2, 3)]
    assert records[3]["grad_norm"] is None and records[3]["skipped_iterations"] == 1
    assert records[4]["lm_loss"] != reference[4]  # the update of iteration 3 was not applied
    assert math.isfinite(records[4]["lm_loss"]) and math.isfinite(records[4]["grad_norm"])
