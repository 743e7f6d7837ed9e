"""Do the launchers' torchrun options exist in a given torch? Checked without starting anything.

    python benchmarks/check_launcher_options.py                       # against this torch
    python benchmarks/check_launcher_options.py --table tests/launchers/torchrun_2.10.json

Each launcher runs with ``DRY_LAUNCH=1`` (it prints its command instead of running it), for every
size it supports and through the SLURM wrapper (with stand-ins for ``srun`` and ``scontrol``).
The torchrun part of each command is parsed by this torch's own ``torchrun`` parser and, with
``--table``, by a parser rebuilt from an option table extracted from an older torch's wheel
(``tests/launchers/extract_torchrun_options.py``), so a flag that only newer torch knows fails
here, not on the cluster. Abbreviations are refused even where torch would accept them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINIMUM_TABLE = REPO / "tests" / "launchers" / "torchrun_2.10.json"
ENTRY_POINT = "megatron_dscoder.pretrain"

LAUNCHERS: list[tuple[str, dict[str, str]]] = [
    ("examples/pretrain_1.3b.sh", {}),
    ("examples/pretrain_6.7b.sh", {}),
    ("examples/pretrain_33b.sh", {}),
    ("examples/extend_context_16k.sh", {"MODEL": "1.3b"}),
    ("examples/extend_context_16k.sh", {"MODEL": "6.7b"}),
    ("examples/extend_context_16k.sh", {"MODEL": "33b"}),
    ("examples/finetune_instruct_6.7b.sh", {}),
]
"""(launcher, extra environment): every command a launcher can produce."""

_FAKE_SRUN = """#!/usr/bin/env bash
# srun stand-in: drop srun's own options, run the task as node 0.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
    case "$1" in --container-*) shift 2 ;; *) shift ;; esac
done
SLURM_NODEID=0 exec "$@"
"""


class OptionError(ValueError):
    """The command does not parse with this torchrun."""


class _StrictParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise OptionError(message)


def parser_from_table(table: dict) -> argparse.ArgumentParser:
    """torchrun's parser, rebuilt from an extracted option table (no torch needed)."""
    parser = _StrictParser(prog=f"torchrun {table['torch']}", allow_abbrev=False, add_help=False)
    types = {"int": int, "float": float, "str": str}
    for opt in table["options"]:
        if opt["takes_value"]:
            parser.add_argument(
                *opt["names"], nargs=opt["nargs"], choices=opt["choices"], type=types[opt["type"]]
            )
        else:
            parser.add_argument(*opt["names"], action="store_true")
    for pos in table["positionals"]:
        parser.add_argument(pos["names"][0], nargs=pos["nargs"])
    return parser


def installed_parser() -> argparse.ArgumentParser:
    """The installed torch's own torchrun parser, made to raise instead of exiting."""
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    parser.allow_abbrev = False

    def error(message: str):
        raise OptionError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


_SET_BY_LAUNCHERS = ("LOCAL_RANK", "WORLD_SIZE", "CUDA_DEVICE_MAX_CONNECTIONS")


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SET_BY_LAUNCHERS and not k.startswith("TORCH_ELASTIC_")
    }
    return {**env, "DRY_LAUNCH": "1", **extra}


def dry_launch(argv: list[str], extra_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(command, variables the launcher set for it) of ``argv`` run with ``DRY_LAUNCH=1``."""
    proc = subprocess.run(argv, cwd=REPO, env=_clean_env(extra_env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    env_lines = [line for line in proc.stderr.splitlines() if line.startswith("# env: ")]
    variables = dict(item.split("=", 1) for item in env_lines[-1].split()[2:]) if env_lines else {}
    return shlex.split(proc.stdout), variables


def launcher_command(script: str, extra_env: dict[str, str] | None = None) -> list[str]:
    """The command a launcher would run, as its argument vector."""
    return dry_launch(["bash", script], extra_env or {})[0]


def slurm_command(script: str) -> list[str]:
    """The command ``sbatch slurm_pretrain.sbatch SCRIPT`` would run on node 0 of two."""
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = Path(tmp)
        (bin_dir / "srun").write_text(_FAKE_SRUN)
        (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'node-a\\nnode-b\\n'\n")
        for tool in ("srun", "scontrol"):
            (bin_dir / tool).chmod(0o755)
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SLURM_JOB_NODELIST": "node-[a-b]",
            "SLURM_NNODES": "2",
        }
        return dry_launch(["bash", "examples/slurm_pretrain.sbatch", script], env)[0]


def all_commands() -> dict[str, list[str]]:
    """Every launcher command, by a readable name."""
    commands = {
        f"{script} {' '.join(f'{k}={v}' for k, v in env.items())}".strip(): launcher_command(
            script, env
        )
        for script, env in LAUNCHERS
    }
    commands["examples/slurm_pretrain.sbatch examples/pretrain_33b.sh"] = slurm_command(
        "examples/pretrain_33b.sh"
    )
    return commands


def check(command: list[str], parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the torchrun part of ``command``; raises :class:`OptionError` if it does not."""
    if command[0] != "torchrun":
        raise OptionError(f"not a torchrun command: {command[0]}")
    args = parser.parse_args(command[1:])
    if not (args.module and args.training_script == ENTRY_POINT):
        raise OptionError(f"torchrun would not run -m {ENTRY_POINT}: {args.training_script}")
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=None, help="also check against this table")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    import torch

    parsers = {f"installed torch {torch.__version__}": installed_parser()}
    if args.table:
        table = json.loads(args.table.read_text())
        parsers[f"torch {table['torch']} (table)"] = parser_from_table(table)
    results, failed = [], 0
    for name, command in all_commands().items():
        for label, parser in parsers.items():
            try:
                check(command, parser)
                verdict = "ok"
            except OptionError as err:
                verdict, failed = f"FAILED: {err}", failed + 1
            results.append({"launcher": name, "torchrun": label, "result": verdict})
            print(f"{verdict:>6}  {label:<40} {name}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
