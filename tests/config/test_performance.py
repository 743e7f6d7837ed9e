"""Performance flags: Megatron-LM's names and senses, values and combinations checked up front."""

import pytest

from megatron_dscoder.config.cli import build_parser, config_from_args
from megatron_dscoder.config.run import ConfigError


def make(flags: str, world_size: int = 2):
    argv = f"--model debug --mock-data --global-batch-size 8 {flags}".split()
    return config_from_args(build_parser().parse_args(argv), world_size)


def test_defaults_leave_the_decision_to_the_machine():
    perf = make("").performance
    assert perf.apply_rope_fusion and perf.bias_swiglu_fusion and perf.gradient_accumulation_fusion
    assert perf.cross_entropy_loss_fusion is None and perf.overlap_grad_reduce is None
    assert perf.overlap_param_gather is None and not perf.tp_comm_overlap
    assert not perf.manual_gc and perf.manual_gc_interval == 0


def test_megatron_flags_set_their_fields():
    perf = make(
        "--no-rope-fusion --no-bias-swiglu-fusion --no-gradient-accumulation-fusion "
        "--cross-entropy-loss-fusion --cross-entropy-fusion-impl native "
        "--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather "
        "--ddp-bucket-size 40000000 --tensor-model-parallel-size 2 --sequence-parallel "
        "--tp-comm-overlap --recompute-granularity selective --recompute-modules mlp layernorm "
        "--manual-gc --manual-gc-interval 100",
        world_size=4,
    ).performance
    assert not (perf.apply_rope_fusion or perf.bias_swiglu_fusion)
    assert not perf.gradient_accumulation_fusion
    assert perf.cross_entropy_loss_fusion and perf.cross_entropy_fusion_impl == "native"
    assert perf.overlap_grad_reduce and perf.overlap_param_gather
    assert perf.ddp_bucket_size == 40_000_000 and perf.tp_comm_overlap
    assert perf.recompute_modules == ("mlp", "layernorm")
    assert perf.manual_gc and perf.manual_gc_interval == 100


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--ddp-bucket-size 0", "--ddp-bucket-size must be > 0"),
        ("--ddp-bucket-size -40", "--ddp-bucket-size must be > 0"),
        ("--manual-gc --manual-gc-interval -1", "--manual-gc-interval must be >= 0"),
        ("--manual-gc-interval 10", "--manual-gc-interval needs --manual-gc"),
        ("--overlap-param-gather", "--overlap-param-gather needs --use-distributed-optimizer"),
        (
            "--use-distributed-optimizer --overlap-param-gather --no-overlap-grad-reduce",
            "--overlap-param-gather needs --overlap-grad-reduce",
        ),
        ("--tp-comm-overlap", "--tp-comm-overlap needs tensor-model-parallel-size > 1"),
        ("--tensor-model-parallel-size 2 --tp-comm-overlap", "sequence-parallel=False"),
        ("--recompute-modules mlp", "--recompute-modules needs --recompute-granularity selective"),
        ("--recompute-granularity selective --recompute-modules moe", "give distinct modules"),
        ("--recompute-granularity selective --recompute-modules mlp mlp", "give distinct"),
    ],
)
def test_bad_values_and_combinations_are_one_line_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        make(flags)


@pytest.mark.parametrize(
    "flags",
    ["--ddp-bucket-size nan", "--ddp-bucket-size inf", "--manual-gc-interval 1.5",
     "--cross-entropy-fusion-impl cudnn"],
)  # fmt: skip
def test_non_numbers_and_unknown_choices_are_usage_errors(flags, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(f"--model debug {flags}".split())
    assert done.value.code == 2
    assert flags.split()[0] in capsys.readouterr().err
