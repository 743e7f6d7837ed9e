"""Configuration errors are caught before any process-group work, naming the values."""

import pytest

from megatron_dscoder.config.cli import build_parser, config_from_args
from megatron_dscoder.config.run import ConfigError
from megatron_dscoder.config.splits import split_pipeline_layers


def make(flags: str, world_size: int = 1):
    if "--data-path" not in flags:
        flags += " --mock-data"
    args = build_parser().parse_args(flags.split())
    return config_from_args(args, world_size)


def test_valid_layout():
    run = make(
        "--model debug --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 "
        "--sequence-parallel --global-batch-size 8",
        world_size=8,
    )
    assert run.parallel.data_parallel_size == 2 and run.num_microbatches == 4


def test_heads_not_divisible_by_tp():
    with pytest.raises(ConfigError, match="num_attention_heads=4 .* tensor-model-parallel-size=8"):
        make("--model debug --tensor-model-parallel-size 8", world_size=8)


def test_kv_groups_not_divisible_by_tp():
    with pytest.raises(ConfigError, match="num_query_groups=2 .* tensor-model-parallel-size=4"):
        make("--model debug --tensor-model-parallel-size 4", world_size=4)


def test_layers_not_splittable_over_pp():
    with pytest.raises(ConfigError, match="num_layers=4 .* pipeline-model-parallel-size=8"):
        make("--model debug --pipeline-model-parallel-size 8", world_size=8)
    with pytest.raises(ConfigError, match="num_layers=62 with 10 on the first"):
        make(
            "--model 33b --lr-warmup-iters 0 --pipeline-model-parallel-size 4 "
            "--decoder-first-pipeline-num-layers 10",
            world_size=4,
        )


def test_global_batch_not_divisible():
    with pytest.raises(
        ConfigError, match="global-batch-size=6 .* micro-batch-size=4 x data-parallel-size=1"
    ):
        make("--model debug --global-batch-size 6 --micro-batch-size 4")


def test_seq_length_above_max_positions():
    with pytest.raises(ConfigError, match="seq-length=4096 exceeds max_position_embeddings=128"):
        make("--model debug --seq-length 4096")


def test_sequence_parallel_needs_tp():
    with pytest.raises(ConfigError, match="--sequence-parallel needs .*=1"):
        make("--model debug --sequence-parallel")


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'gpt5'"):
        make("--model gpt5")


def test_world_size_not_divisible():
    with pytest.raises(ConfigError, match="world size 3 .* 2 x pipeline"):
        make("--model debug --tensor-model-parallel-size 2", world_size=3)


@pytest.mark.parametrize(("pp", "expected"), [(2, (None, None)), (4, (15, 15)), (8, (7, 7))])
def test_33b_splits_over_pipeline_stages(pp, expected):
    first, last = split_pipeline_layers(62, pp)
    assert (first, last) == expected
    if first is not None:
        middle = 62 - first - last
        assert middle % (pp - 2) == 0 and middle // (pp - 2) >= first


def test_data_source_is_exactly_one():
    args = build_parser().parse_args("--model debug".split())
    with pytest.raises(ConfigError, match="exactly one of --mock-data and --data-path"):
        config_from_args(args, 1)
    with pytest.raises(ConfigError, match="--data-path needs --tokenizer-model"):
        make("--model debug --data-path some/prefix")


def test_checkpoint_flags():
    with pytest.raises(ConfigError, match="--save-interval 5 needs --save"):
        make("--model debug --save-interval 5")
    with pytest.raises(ConfigError, match="--finetune needs --load"):
        make("--model debug --finetune")
    with pytest.raises(ConfigError, match="--stage extend-context needs --load"):
        make("--model debug --stage extend-context --mock-data")
    # a stage is planned before its base model exists: --dry-run needs no --load
    run = make("--model 6.7b --stage extend-context --dry-run", world_size=8)
    assert run.train.seq_length == 16384 and run.checkpoint.finetune


def test_recipe_defaults_and_overrides():
    run = make("--model 6.7b --global-batch-size 64 --train-iters 4000", world_size=8)
    assert run.train.lr == 4.2e-4 and run.train.global_batch_size == 64
    assert run.train.lr_decay_style == "three-stage" and run.train.lr_warmup_iters == 2000
    run = make("--model 33b --train-iters 4000", world_size=8)
    assert (run.train.lr, run.train.global_batch_size) == (3.5e-4, 3840)
    assert make("--model 1.3b --lr 1e-4 --train-iters 4000").train.lr == 1e-4


def test_warmup_longer_than_training():
    with pytest.raises(ConfigError, match="lr-warmup-iters=2000 .* train-iters=100"):
        make("--model 1.3b --train-iters 100")


def test_recompute_full_needs_method():
    with pytest.raises(ConfigError, match="recompute-granularity=full needs --recompute-method"):
        make("--model debug --recompute-granularity full")
