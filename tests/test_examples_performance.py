"""Every launcher turns on what Megatron-LM's Llama-3 8B H100 example turns on.

That example (``train_llama3_8b_h100_fp8.sh`` in Megatron-LM's Llama examples) passes
``--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather
--cross-entropy-loss-fusion --manual-gc``; its RoPE, bias-SwiGLU and gradient-accumulation fusions
are Megatron-LM's defaults, as they are here. The launchers run for real on CPU in
``tests/test_examples.py``.
"""

from __future__ import annotations

import re
import shlex

import pytest

from megatron_dscoder.config.cli import build_parser, config_from_args
from tests.launch import REPO

MEGATRON_H100 = {
    "--overlap-grad-reduce",
    "--overlap-param-gather",
    "--cross-entropy-loss-fusion",
    "--manual-gc",
}
LAUNCHERS = ("pretrain_1.3b.sh", "pretrain_6.7b.sh", "pretrain_33b.sh", "extend_context_16k.sh",
             "finetune_instruct_6.7b.sh")  # fmt: skip


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_turns_on_megatrons_h100_switches(name):
    text = (REPO / "examples" / name).read_text()
    assert "--use-distributed-optimizer" in text  # --overlap-param-gather needs it
    perf = shlex.split(re.search(r"^perf_args=\((.*?)\)$", text, re.M | re.S).group(1))
    assert set(perf) == MEGATRON_H100
    assert '"${perf_args[@]}" "$@"' in text  # the user's arguments come after, and win
    argv = ["--model", "debug", "--mock-data", "--use-distributed-optimizer", *perf]
    run = config_from_args(build_parser().parse_args(argv), world_size=2)
    assert run.performance.overlap_param_gather and run.performance.manual_gc
