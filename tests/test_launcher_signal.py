"""SIGTERM end to end under the launcher: the workers save and exit 0, torchrun still exits 1
(it re-raises the signal), and the launcher exits 0 because the workers' marker says they saved.

``pretrain_33b.sh`` runs on one node with two CPU processes standing in for GPUs (as in
test_examples.py); the signal goes to the launcher alone, as SLURM's ``--signal=B:TERM`` sends it
to the batch shell (with ``--signal=TERM`` every process of the step gets it: torchrun forwards
it to the workers either way).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch import REPO, free_port, read_jsonl
from tests.training.conftest import token_corpus  # noqa: F401 - shared fixture


def _logged(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [r["iteration"] for r in read_jsonl(metrics) if "lm_loss" in r]


@pytest.mark.parametrize("target", ["launcher", "group"])
def test_sigterm_to_the_launcher_saves_and_exits_0(tmp_path, token_corpus, target):  # noqa: F811
    """``launcher``: the shell alone gets the signal; ``group``: the shell and torchrun both get
    it (a terminal's Ctrl-C, SLURM signalling every process of the step), so torchrun gets it
    twice (directly and forwarded) and must still let the workers save."""
    env = {
        **os.environ,
        "GPUS_PER_NODE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DATA_PATH": str(token_corpus["code"]),
        "TOKENIZER_MODEL": str(token_corpus["tokenizer"]),
        "DATA_CACHE_PATH": str(tmp_path / "cache"),
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "TENSORBOARD_DIR": str(tmp_path / "tb"),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
    }
    metrics = tmp_path / "metrics.jsonl"
    flags = (
        "--model debug --pipeline-model-parallel-size 1 --tensor-model-parallel-size 2 "
        "--train-iters 500 --seq-length 64 --global-batch-size 4 --lr-warmup-iters 0"
    )
    log = open(tmp_path / "launcher.log", "w")
    proc = subprocess.Popen(
        ["bash", "examples/pretrain_33b.sh", *flags.split(), "--metrics-jsonl", str(metrics)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while len(_logged(metrics)) < 2:
            assert proc.poll() is None, (tmp_path / "launcher.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "iteration 2 not reached"
            time.sleep(0.05)
        if target == "launcher":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)  # bash and torchrun (workers: own sessions)
        status = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    out = (tmp_path / "launcher.log").read_text()
    assert status == 0, out[-4000:]
    last = _logged(metrics)[-1]
    assert last < 500
    saved = (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip()
    assert int(saved) == last
    assert f"launcher: SIGTERM: the workers saved a checkpoint at iteration {last}" in out
    assert "(torchrun exited 1)" in out
    assert not list(tmp_path.glob("dscoder-exit.*"))  # the marker is removed
