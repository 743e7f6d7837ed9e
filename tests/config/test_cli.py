"""The command line: one override step by field name; user mistakes are one line, exit 2."""

import subprocess
import sys
import time

import pytest

from megatron_dscoder.config import recipes
from megatron_dscoder.config.cli import FIELD_SECTION, build_parser, config_from_args, override
from megatron_dscoder.config.run import ConfigError
from tests.launch import REPO


def make(flags: str, world_size: int = 1):
    return config_from_args(build_parser().parse_args(flags.split()), world_size)


def test_override_replaces_exactly_the_named_fields():
    base = recipes.pretrain("1.3b")
    run = override(base, {"lr": 1e-4, "tensor_model_parallel_size": 2, "world_size": 2})
    assert run.train.lr == 1e-4 and run.parallel.tensor_model_parallel_size == 2
    assert run.train.global_batch_size == base.train.global_batch_size
    assert base.train.lr == 5.3e-4, "the recipe itself is unchanged"
    with pytest.raises(ConfigError, match="no configuration field 'learning_rate'"):
        override(base, {"learning_rate": 1.0})


def test_token_horizon_follows_the_batch_geometry():
    assert make("--model debug --mock-data --seq-length 64").train.train_iters == 20
    assert make("--model debug --mock-data --seq-length 64 --train-iters 3").train.train_iters == 3


def test_every_config_field_is_a_flag_of_its_own_name():
    flags = {a.dest for a in build_parser()._actions}
    # recipe-only: the token horizon, and the data kind that --stage sft sets
    assert set(FIELD_SECTION) - flags == {"train_tokens", "sft"}  # --world-size is the planner's


@pytest.mark.parametrize(
    "flags",
    [
        "--train-iters 0",
        "--train-iters -5",
        "--seq-length 0",
        "--micro-batch-size 0",
        "--global-batch-size -8",
        "--lr 0",
        "--lr=-1e-4",
        "--min-lr -1",
        "--clip-grad -1",
        "--adam-beta1 1.5",
        "--adam-eps 0",
        "--log-interval 0",
        "--eval-interval 0",
        "--eval-iters 0",
        "--keep-checkpoints 0",
        "--save x --save-interval 0",
        "--max-nonfinite-iters 0",
        "--exit-interval 0",
        "--recompute-num-layers 0",
        "--num-workers -1",
        "--peak-tflops 0",
        "--tensor-model-parallel-size 0",
        "--decoder-first-pipeline-num-layers -1",
        "--split abc",
        "--split 0,0,0",
        "--split 1,-1,0",
        "--min-lr 1 --lr 0.1",
    ],
)
def test_nonsense_values_are_errors(flags):
    with pytest.raises(ConfigError):
        make(f"--model debug --mock-data {flags}")


def test_user_mistakes_print_one_line_and_exit_2_fast():
    for flags in ("--train-iters 0", "--split abc", "--model gpt5", "--lr"):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "megatron_dscoder.pretrain", "--model", "debug", "--mock-data"]
            + flags.split(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], proc.stderr
        assert time.perf_counter() - start < 10  # no torch/megatron import before the check
