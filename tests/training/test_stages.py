"""Which stage a checkpoint belongs to (``training/stages.py``), checked on run configs as the
command line builds them; the end-to-end refusals at --load are in test_faults.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.config import cli, recipes
from megatron_dscoder.training import stages
from megatron_dscoder.training.train import latest_checkpoint_metadata


def _meta(run, bf16=None) -> dict:
    return {
        "format_version": checkpointing.FORMAT_VERSION,
        "arch": dataclasses.asdict(run.arch),
        "data": dataclasses.asdict(run.data),
        "train": {**dataclasses.asdict(run.train), "bf16": bf16},
    }


BASE = recipes.pretrain("debug")
EXTENDED = recipes.extend_context(BASE)
SFT = recipes.sft(BASE)


def test_stages_are_told_apart_by_the_run_config():
    assert [stages.run_stage(r) for r in (BASE, EXTENDED, SFT)] == [
        "pretrain",
        "extend-context",
        "sft",
    ]
    assert stages.checkpoint_stage(_meta(EXTENDED)) == "extend-context"
    assert stages.checkpoint_stage({"arch": dataclasses.asdict(BASE.arch)}) == "pretrain"  # HF


@pytest.mark.parametrize("run", [EXTENDED, SFT], ids=["extend", "sft"])
def test_a_stage_never_resumes_its_base(run, tmp_path):
    with pytest.raises(stages.StageMismatch, match="a checkpoint of stage pretrain, not of"):
        stages.check_resume(_meta(BASE), run, tmp_path, with_optimizer=True)
    stages.check_resume(_meta(run), run, tmp_path, with_optimizer=True)  # its own: resumes


def test_precision_must_match_only_with_the_optimizer_state(tmp_path):
    bf16 = dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, bf16=True))
    with pytest.raises(
        stages.StageMismatch, match=r"saved in fp32 \(--no-bf16\), this run is bf16"
    ):
        stages.check_resume(_meta(BASE, bf16=False), bf16, tmp_path, with_optimizer=True)
    stages.check_resume(_meta(BASE, bf16=False), bf16, tmp_path, with_optimizer=False)


@pytest.mark.parametrize("model", [[], ["--model", "debug"]], ids=["recorded", "named"])
def test_extending_an_extended_checkpoint_says_so(tmp_path, capsys, model):
    ckpt = checkpointing.iteration_dir(tmp_path, 3)
    ckpt.mkdir()
    meta = {**_meta(EXTENDED), "model": "debug", "iteration": 3}
    (ckpt / "run_config.json").write_text(json.dumps(meta))
    (ckpt / ".metadata").write_bytes(b"")
    argv = [*model, *f"--stage extend-context --load {tmp_path} --mock-data".split()]
    with pytest.raises(SystemExit) as exit_:
        cli.parse(argv, 1, latest_checkpoint_metadata)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "already context-extended (RoPE base 100000, interpolation x4)" in err


def test_the_command_line_refuses_a_bases_directory_in_one_line(tmp_path):
    from tests.launch import python_module

    ckpt = checkpointing.iteration_dir(tmp_path, 4)
    ckpt.mkdir()
    meta = {**_meta(BASE), "model": "debug", "iteration": 4, "run_id": "base"}
    (ckpt / "run_config.json").write_text(json.dumps(meta))
    (ckpt / ".metadata").write_bytes(b"")
    argv = "--stage extend-context --mock-data --train-iters 2 --global-batch-size 4"
    proc = python_module(
        "megatron_dscoder.pretrain",
        *argv.split(),
        *("--load", str(tmp_path), "--save", str(tmp_path), "--keep-checkpoints", "1"),
        check=False,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and "a checkpoint of stage pretrain, not of this" in errors[0]
    assert [p.name for p in tmp_path.iterdir()] == ["iter_0000004"]
