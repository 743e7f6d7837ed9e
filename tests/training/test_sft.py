"""The instruct stage (``--stage sft``): recipe, packed data, layout parity, and an overfit demo.

One single-process launch makes a base checkpoint (1 pretraining iteration on mock tokens), runs
5 SFT iterations (the parity reference) and the overfit run (400 iterations on 20 chat examples,
saved); one 2-rank launch runs TP=2 + SP and PP=2 from the same base checkpoint. The overfit
model is exported to HF and answers through ``generate --chat``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron_dscoder.config import cli, recipes
from megatron_dscoder.config.run import ConfigError
from megatron_dscoder.data.indexed import read_documents
from megatron_dscoder.datasets.sft import PackedSFT
from megatron_dscoder.instruct.encode import mask_prefix, write_sft
from megatron_dscoder.tokenizer import EOT, load_tokenizer
from tests.launch import WORKERS, python_module, read_jsonl, torchrun
from tests.training.sft_helpers import SYSTEM, WORDS, answer, instruction_set, prompt

PARITY = "--train-iters 5 --lr-warmup-iters 1 --global-batch-size 8 --seq-length 64 --seed 7"
OVERFIT = (
    "--train-iters 400 --lr-warmup-iters 0 --lr 3e-3 --global-batch-size 8 --micro-batch-size 8 "
    "--seed 7"
)
LAYOUTS = {
    "tp2_sp": "--tensor-model-parallel-size 2 --sequence-parallel",
    "pp2": "--pipeline-model-parallel-size 2",
}


@pytest.fixture(scope="module")
def data(tiny_tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    write_sft(instruction_set(), load_tokenizer(tiny_tokenizer_dir), str(out / "set"))
    return out


@pytest.fixture(scope="module")
def runs(data, tiny_tokenizer_dir):
    tok, base = tiny_tokenizer_dir, data / "base"
    sft = f"--stage sft --load {base} --data-path {data / 'set'} --tokenizer-model {tok}"
    pretrain = f"--model debug --mock-data --tokenizer-model {tok} --train-iters 1 --save {base}"
    python_module(
        "tests.workers.layouts", str(data), "base", pretrain, "single", f"{sft} {PARITY}",
        "overfit", f"{sft} {OVERFIT} --save {data / 'ft'} --save-interval 400",
    )  # fmt: skip
    args = [str(data)]
    for name, flags in LAYOUTS.items():
        args += [name, f"{sft} {PARITY} {flags}"]
    torchrun(2, WORKERS / "layouts.py", *args)
    return {n: read_jsonl(data / f"{n}.jsonl") for n in ["single", "overfit", *LAYOUTS]}


def test_recipe(tiny_tokenizer_dir):
    run = recipes.sft(recipes.pretrain("6.7b"))
    t = run.train
    assert (t.lr, t.lr_warmup_iters, t.lr_decay_style, t.min_lr) == (1e-5, 100, "cosine", 0.0)
    assert t.global_batch_size * t.seq_length == 4 * 1024 * 1024  # ~4M tokens, 1024 x 4096
    assert t.train_iters == 477  # 2B tokens
    assert run.checkpoint.finetune and run.data.sft
    tok = str(tiny_tokenizer_dir)
    args = ["--stage", "sft", "--data-path", "x", "--tokenizer-model", tok, "--train-iters", "200"]
    with pytest.raises(ConfigError, match="needs --load"):
        cli.config_from_args(cli.build_parser().parse_args(["--model", "1.3b", *args]), 1)


def test_packed_samples_learn_only_responses(data, tiny_tokenizer_dir):
    """Samples are windows of the shuffled epoch stream; the loss mask is the labels' mask."""
    tokens, lengths = read_documents(str(data / "set"))
    masks, _ = read_documents(mask_prefix(str(data / "set")))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    order = np.random.default_rng([7, 0]).permutation(20)
    stream = np.concatenate([tokens[starts[d] : starts[d + 1]] for d in order])
    stream_mask = np.concatenate([masks[starts[d] : starts[d + 1]] for d in order])
    ds = PackedSFT(str(data / "set"), 32, seed=7, docs=(0, 20))
    for i in range(len(stream) // 32 - 1):
        s, window = ds[i], slice(i * 32, i * 32 + 33)
        assert s["tokens"].tolist() == stream[window][:-1].tolist()
        assert s["labels"].tolist() == stream[window][1:].tolist()
        assert s["loss_mask"].tolist() == stream_mask[window][1:].tolist()
        assert s["position_ids"].tolist() == list(range(32))
    # what is learned of each conversation: its answer, the newline, <|EOT|>; nothing else
    tok = load_tokenizer(tiny_tokenizer_dir)
    for d in range(20):
        doc, m = tokens[starts[d] : starts[d + 1]], masks[starts[d] : starts[d + 1]]
        learned = doc[m > 0].tolist()
        assert learned[-1] == tok.token_to_id(EOT)
        assert tok.decode(learned[:-1], skip_special_tokens=False) == answer(d) + "\n"
    beyond = ds[len(stream) // 32 + 5]  # the next epoch: another order, same shapes
    assert beyond["tokens"].shape == (32,)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_matches_single_process(runs, layout):
    ref, got = runs["single"], runs[layout]
    assert [r["iteration"] for r in got] == [1, 2, 3, 4, 5]
    for r, g in zip(ref, got, strict=True):
        for key in ("lm_loss", "grad_norm"):
            assert g[key] == pytest.approx(r[key], rel=1e-6), (layout, r["iteration"], key)


def test_overfits_and_answers_with_chat(runs, data, tiny_tokenizer_dir, capsys):
    from megatron_dscoder.convert.cli import main as convert
    from megatron_dscoder.evaluation.generate import Generator
    from megatron_dscoder.evaluation.generate import main as generate

    losses = [r["lm_loss"] for r in runs["overfit"]]
    assert losses[-1] < losses[0] / 50, losses[::20]
    hf = data / "hf"
    assert convert(["to-hf", "--load", str(data / "ft"), "--save", str(hf)]) == 0
    config = json.loads((hf / "config.json").read_text())
    assert config["eos_token_id"] == load_tokenizer(tiny_tokenizer_dir).token_to_id(EOT)
    assert "chat_template" in json.loads((hf / "tokenizer_config.json").read_text())
    gen = Generator(hf)  # all twenty prompts in one process, then the command line
    for i in range(len(WORDS)):
        ids = gen.chat_prompt_ids(prompt(i), SYSTEM)
        assert gen.decode(gen.generate_ids(ids, max_new_tokens=24)) == answer(i) + "\n", i
    capsys.readouterr()
    argv = ["--model", str(hf), "--chat", "--system", SYSTEM, "--prompt", prompt(7)]
    assert generate([*argv, "--max-new-tokens", "24"]) == 0
    assert capsys.readouterr().out == answer(7) + "\n"
