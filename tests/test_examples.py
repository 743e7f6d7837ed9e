"""The launchers run for real on CPU: environment parameters, pass-through arguments.

``pretrain_33b.sh`` is started as a user would on one node, with two CPU processes standing in
for GPUs; the extra arguments (appended after the script's own, so they win) shrink the run to
the debug model. Shell and Dockerfile lint run in ``make lint``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.launch import REPO, free_port, read_jsonl
from tests.training.conftest import token_corpus  # noqa: F401 - shared fixture


def test_pretrain_33b_launcher_runs_with_overrides(tmp_path, token_corpus):  # noqa: F811
    env = {
        **os.environ,
        "GPUS_PER_NODE": "2",
        "NNODES": "1",
        "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DATA_PATH": f"0.5 {token_corpus['code']} 0.5 {token_corpus['prose']}",
        "TOKENIZER_MODEL": str(token_corpus["tokenizer"]),
        "DATA_CACHE_PATH": str(tmp_path / "cache"),
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "TENSORBOARD_DIR": str(tmp_path / "tb"),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    metrics = tmp_path / "metrics.jsonl"
    proc = subprocess.run(
        [
            "bash",
            "examples/pretrain_33b.sh",
            "--model",
            "debug",
            "--pipeline-model-parallel-size",
            "1",
            "--tensor-model-parallel-size",
            "2",
            "--train-iters",
            "3",
            "--seq-length",
            "64",
            "--global-batch-size",
            "4",
            "--lr-warmup-iters",
            "0",
            "--save-interval",
            "3",
            "--eval-interval",
            "3",
            "--metrics-jsonl",
            str(metrics),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    train = [r for r in read_jsonl(metrics) if "lm_loss" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3]
    assert (tmp_path / "ckpt" / "iter_0000003" / "run_config.json").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "ckpt").glob("wandb/offline-run-*"))


def test_launcher_under_torchrun_runs_the_trainer_directly(tmp_path, token_corpus):  # noqa: F811
    """``torchrun --no-python examples/pretrain_1.3b.sh`` (what Kubeflow PyTorchJob and TorchX
    amount to): the launcher sees LOCAL_RANK and WORLD_SIZE and runs pretrain in the worker
    itself. A ``torchrun`` first on PATH that fails proves no second one is started."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "torchrun").write_text("#!/usr/bin/env bash\necho nested torchrun >&2\nexit 97\n")
    (fake / "torchrun").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "TOKENIZER_MODEL": str(token_corpus["tokenizer"]),
        "DATA_PATH": str(token_corpus["code"]),
        "DATA_CACHE_PATH": str(tmp_path / "cache"),
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "TENSORBOARD_DIR": str(tmp_path / "tb"),
    }
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--no-python",
            "--nproc-per-node",
            "1",
            "--master-port",
            str(free_port()),
            "examples/pretrain_1.3b.sh",
            "--dry-run",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "nested torchrun" not in out
    # The planner's report for the launcher's 1.3B layout (24 layers) on torchrun's world of 1.
    assert "stage 0: 24 layers" in proc.stdout and "FITS: peak" in proc.stdout, out[-3000:]
