"""Recipes are functions returning complete runs; stages are built from them."""

import dataclasses

import pytest

from megatron_dscoder.config import recipes
from megatron_dscoder.model.registry import MODELS


def test_every_registry_size_has_a_recipe_and_nothing_else():
    assert set(recipes.SIZES) == set(MODELS)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_pretrain_recipe_is_a_complete_run(model):
    run = recipes.pretrain(model)
    assert run.model == model and run.arch == MODELS[model]
    assert run.train.seq_length == MODELS[model].max_position_embeddings
    assert run.train.train_iters >= 1 and run.data.mock_data


def test_paper_table_2_horizons():
    # 1.8T tokens at 4096-token sequences and Table 2's global batches.
    iters = {m: recipes.pretrain(m).train.train_iters for m in ("1.3b", "6.7b", "33b")}
    assert iters == {"1.3b": 429_154, "6.7b": 190_735, "33b": 114_441}
    assert recipes.pretrain("debug").train.train_iters == 10


def test_unknown_size_is_a_key_error_naming_the_sizes():
    with pytest.raises(KeyError, match="known models: debug, debug-4k, 1.3b, 6.7b, 33b"):
        recipes.pretrain("7b")


def test_extend_context_is_built_from_the_4k_run():
    run = recipes.extend_context(recipes.pretrain("6.7b"))
    assert run.arch.rotary_base == 100000 and run.arch.seq_len_interpolation_factor == 4.0
    assert run.arch.max_position_embeddings == 16384 and run.train.seq_length == 16384
    assert (run.train.global_batch_size, run.train.train_iters) == (512, 1000)
    assert run.train.lr == pytest.approx(4.2e-5) and run.train.lr_decay_style == "constant"
    assert run.train.lr_warmup_iters == 0 and run.checkpoint.finetune
    debug = recipes.extend_context(recipes.pretrain("debug"))
    assert debug.train.global_batch_size == 8 and debug.train.seq_length == 512


def test_configs_are_frozen():
    run = recipes.pretrain("debug")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.train.lr = 1.0  # type: ignore[misc]


def test_continue_pretrain_is_deepseek_coder_v15():
    run = recipes.continue_pretrain(recipes.pretrain("7b-v1.5"))
    assert run.train.seq_length == 4096 and run.checkpoint.finetune
    assert run.train.global_batch_size == 2304 and run.train.lr == pytest.approx(4.2e-4)
    assert run.train.train_iters == 211_928  # 2T tokens / (2304 x 4096)
    assert sum(w for w, _ in recipes.V15_DATA_MIX) == pytest.approx(1.0)
    assert [w for w, _ in recipes.V15_DATA_MIX] == [0.70, 0.10, 0.07, 0.07, 0.06]


def test_dry_run_plans_v15_on_one_h800_node():
    """``--dry-run --model 7b-v1.5`` on 8 GPUs: DeepSeek-LLM-7B's 6.91B parameters, and it fits."""
    import re

    from megatron_dscoder.config import cli
    from megatron_dscoder.training import planner

    argv = ["--model", "7b-v1.5", "--dry-run", "--world-size", "8", "--use-distributed-optimizer"]
    _, run = cli.parse(argv, 1)
    report, fits = planner.describe(run, gpu_memory_gib=80.0)
    total = int(re.search(r"model 7b-v1.5: ([\d,]+) parameters", report).group(1).replace(",", ""))
    assert abs(total - 6.91e9) / 6.91e9 < 1e-3 and "padded vocab 102,400" in report
    assert fits and "DP=8" in report
