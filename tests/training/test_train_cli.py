"""The entry point's CLI surface: dry-run plans and configuration errors exit cleanly."""

import re

from tests.launch import python_module


def test_dry_run_33b_prints_total_and_per_rank_parameters():
    out = python_module(
        "megatron_dscoder.pretrain",
        "--model",
        "33b",
        "--dry-run",
        "--tensor-model-parallel-size",
        "8",
        "--pipeline-model-parallel-size",
        "2",
    ).stdout
    total = int(re.search(r"model 33b: ([\d,]+) parameters", out).group(1).replace(",", ""))
    assert abs(total - 33.3e9) / 33.3e9 < 0.01
    per_rank = [int(x.replace(",", "")) for x in re.findall(r"([\d,]+) parameters per rank", out)]
    assert len(per_rank) == 2
    # TP shards of 31 layers + one vocabulary shard + replicated norms on each stage.
    assert all(abs(p - total / 16) / (total / 16) < 0.01 for p in per_rank)


def test_configuration_error_exits_2_with_the_values():
    proc = python_module(
        "megatron_dscoder.pretrain",
        "--model",
        "debug",
        "--dry-run",
        "--sequence-parallel",
        check=False,
    )
    assert proc.returncode == 2
    assert "--sequence-parallel needs tensor-model-parallel-size > 1" in proc.stderr
