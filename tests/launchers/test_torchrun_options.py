"""Every torchrun option a launcher passes exists in the oldest supported torch (and this one).

The oldest torch's parser is rebuilt from ``torchrun_2.10.json``, an option table extracted from
the torch 2.10.0 wheel by ``extract_torchrun_options.py`` (the wheel's name and sha256 are in the
table). The extractor is itself checked against the installed torch's real parser.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from benchmarks import check_launcher_options as launch_check
from tests.launchers.extract_torchrun_options import extract

TABLE = json.loads(launch_check.MINIMUM_TABLE.read_text())


@pytest.fixture(scope="module")
def commands() -> dict[str, list[str]]:
    return launch_check.all_commands()


def test_extractor_reads_what_the_real_parser_has():
    from torch.distributed.run import get_args_parser

    table = extract(Path(torch.__file__).parents[1])
    assert table["torch"] == torch.__version__
    real = {
        a.option_strings[0] if a.option_strings else a.dest: a
        for a in get_args_parser()._actions
        if a.dest != "help"
    }
    extracted = {e["names"][0]: e for e in table["options"] + table["positionals"]}
    assert set(extracted) == set(real)
    for name, entry in extracted.items():
        action = real[name]
        assert entry["names"] == (action.option_strings or [action.dest])
        assert entry["takes_value"] == (action.nargs != 0), name
        assert entry["choices"] == (list(action.choices) if action.choices else None), name


def test_table_is_the_declared_minimum_torch():
    project = tomllib.loads((launch_check.REPO / "pyproject.toml").read_text())
    (requirement,) = [Requirement(r) for r in project["project"]["dependencies"]]
    assert requirement.name == "torch"
    minimum = Version(str(requirement.specifier).removeprefix(">="))
    assert Version(TABLE["torch"]).release[:2] == minimum.release[:2]
    assert TABLE["wheel"].startswith(f"torch-{TABLE['torch'].split('+')[0]}-")
    assert len(TABLE["sha256"]) == 64
    assert Version(torch.__version__) in requirement.specifier  # the CPU suite's torch fits


def test_every_launcher_parses_with_the_minimum_and_the_installed_torch(commands):
    oldest, installed = launch_check.parser_from_table(TABLE), launch_check.installed_parser()
    assert len(commands) == 8
    for name, command in commands.items():
        for parser in (oldest, installed):
            args = launch_check.check(command, parser)
            assert args.training_script == "megatron_dscoder.pretrain", name
        assert "--shutdown-timeout" not in command


def test_the_slurm_wrapper_passes_node_rank_and_size(commands):
    args = launch_check.check(
        commands["examples/slurm_pretrain.sbatch examples/pretrain_33b.sh"],
        launch_check.parser_from_table(TABLE),
    )
    assert (args.nnodes, args.node_rank, args.master_addr) == ("2", 0, "node-a")


def test_an_option_newer_than_the_minimum_is_caught(commands):
    command = commands["examples/pretrain_1.3b.sh"]
    newer = [command[0], "--shutdown-timeout", "170", *command[1:]]
    launch_check.check(newer, launch_check.installed_parser())  # torch 2.13 has it
    with pytest.raises(launch_check.OptionError, match="shutdown-timeout"):
        launch_check.check(newer, launch_check.parser_from_table(TABLE))
    abbreviated = [command[0], "--nproc", "8", *command[1:]]
    with pytest.raises(launch_check.OptionError):
        launch_check.check(abbreviated, launch_check.parser_from_table(TABLE))


def test_the_launchers_environment_grace_period_and_ordered_connections():
    def launch_env(script: str, *args: str, **env: str) -> dict[str, str]:
        return launch_check.dry_launch(["bash", script, *args], env)[1]

    # torch >= 2.12 reads the grace period from the environment; older torch ignores it.
    assert launch_env("examples/pretrain_1.3b.sh")["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "170"
    assert (
        launch_env("examples/pretrain_1.3b.sh", SHUTDOWN_TIMEOUT="300")[
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
        ]
        == "300"
    )
    # In-order CUDA connections with TP > 1 or CP > 1 only (1.3B 16K is TP=1, CP=2).
    assert launch_env("examples/pretrain_1.3b.sh")["CUDA_DEVICE_MAX_CONNECTIONS"] == ""
    assert launch_env("examples/pretrain_33b.sh")["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert (
        launch_env("examples/extend_context_16k.sh", MODEL="1.3b")["CUDA_DEVICE_MAX_CONNECTIONS"]
        == "1"
    )
    assert (
        launch_env("examples/pretrain_1.3b.sh", "--context-parallel-size", "2")[
            "CUDA_DEVICE_MAX_CONNECTIONS"
        ]
        == "1"
    )


def test_under_torchrun_the_launcher_runs_the_entry_point_itself():
    command, env = launch_check.dry_launch(
        ["bash", "examples/pretrain_33b.sh", "--train-iters", "5"],
        {"LOCAL_RANK": "3", "WORLD_SIZE": "64"},
    )
    assert command[:3] == ["python", "-m", "megatron_dscoder.pretrain"]
    assert command[-2:] == ["--train-iters", "5"] and "torchrun" not in command
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == ""  # no torchrun of ours to configure
