"""The conversion cases of ``tests/convert``, run once per session: random-weight debug models
saved by the training loop's checkpointing at TP=1, TP=2 and PP=2 under torchrun/gloo, random HF
``LlamaForCausalLM`` models saved by transformers, error inputs, and every conversion as the real
command line (``tools/convert_checkpoint.py``) in one interpreter, to pay the imports once (the
BOS-policy and v1.5 jobs of :mod:`tests.convert.fidelity_jobs` included)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.convert import fidelity_jobs
from tests.convert.conftest import TOKENS
from tests.convert.helpers import make_hf_llama
from tests.launch import REPO, torchrun_cmd

WORKERS = Path(__file__).resolve().parent / "workers"
ROWS = 384  # TOKENS padded by the debug model's make_vocab_size_divisible_by=128
TOKENS_TEXT = f"has {TOKENS} tokens"
SAVES = {  # name: (TP, PP, MHA, 16K recipe: RoPE base 1e5 with linear scaling 4)
    "gqa_tp1": (1, 1, False, False),
    "gqa_tp2": (2, 1, False, True),
    "gqa_pp2": (1, 2, False, False),
    "mha_tp1": (1, 1, True, False),
    "mha_tp2": (2, 1, True, False),
    "mha_pp2": (1, 2, True, False),
}
SOURCES = {  # HF models made by transformers: (MHA, dtype, RoPE linear factor)
    "hf_gqa": (False, "float32", None),
    "hf_mha": (True, "float32", None),
    "hf_gqa16k_bf16": (False, "bfloat16", 4.0),
}
TINY_SHARDS = ["--max-shard-size-gb", str(100e3 / 1024**3)]  # ~100 kB: several shards
BIG = dict(layers=32, hidden=256, ffn=704)  # ~94 MB fp32 for the streaming check


def _write_big_hf(path: Path) -> int:
    """A larger random Llama written with safetensors directly; returns its size in bytes."""
    from safetensors.torch import save_file

    h, f, layers = BIG["hidden"], BIG["ffn"], BIG["layers"]
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.embed_tokens.weight": torch.randn(ROWS, h, generator=gen),
        "lm_head.weight": torch.randn(ROWS, h, generator=gen),
        "model.norm.weight": torch.ones(h),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, shape in (
            ("self_attn.q_proj", (h, h)),
            ("self_attn.k_proj", (h // 2, h)),
            ("self_attn.v_proj", (h // 2, h)),
            ("self_attn.o_proj", (h, h)),
            ("mlp.gate_proj", (f, h)),
            ("mlp.up_proj", (f, h)),
            ("mlp.down_proj", (h, f)),
        ):
            tensors[p + name + ".weight"] = torch.randn(*shape, generator=gen) * 0.02
        tensors[p + "input_layernorm.weight"] = torch.ones(h)
        tensors[p + "post_attention_layernorm.weight"] = torch.ones(h)
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": ROWS,
        "hidden_size": h,
        "intermediate_size": f,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "torch_dtype": "float32",
    }
    (path / "config.json").write_text(json.dumps(config))
    return sum(t.numel() * 4 for t in tensors.values())


def torchrun_background(
    nproc: int, script: Path, *args: str, env: dict[str, str]
) -> subprocess.Popen:
    """Start a torchrun launch (gloo, one thread per rank, ranks forked from a launcher that
    has imported the training stack) without waiting for it."""
    cmd = torchrun_cmd(nproc, str(script), *args, preloaded=True)
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _jobs(d: SimpleNamespace) -> list[dict]:
    def conv(name: str, *argv: str, measure: bool = False) -> dict:
        return {"name": name, "argv": [str(a) for a in argv], "measure": measure}

    jobs = [
        conv(f"export_{n}", "to-hf", "--load", d.ckpt / n, "--save", d.hf / n, "--check-logits")
        for n in SAVES
    ]
    for n in SOURCES:  # HF -> megatron (TP=2 chunks, PP=2 recorded) -> HF (sharded)
        jobs += [
            conv(
                f"import_{n}",
                "from-hf",
                "--load",
                d.src / n,
                "--save",
                d.meg / n,
                "--tensor-model-parallel-size",
                2,
                "--pipeline-model-parallel-size",
                2,
                "--check-logits",
            ),
            conv(
                f"back_{n}",
                "to-hf",
                "--load",
                d.meg / n,
                "--save",
                d.back / n,
                *TINY_SHARDS,
                "--check-logits",
            ),
        ]
    jobs += [  # megatron (TP=2) -> HF -> megatron (TP=2): chunking as megatron-core's own save
        conv(
            "reimport_gqa_tp2",
            "from-hf",
            "--load",
            d.hf / "gqa_tp2",
            "--save",
            d.meg / "reimport_gqa_tp2",
            "--tensor-model-parallel-size",
            2,
        ),
        conv(
            "err_not_llama",
            "from-hf",
            "--load",
            d.err / "not_llama",
            "--save",
            d.err / "out_not_llama",
        ),
        conv(
            "err_missing_shard",
            "from-hf",
            "--load",
            d.err / "missing_shard",
            "--save",
            d.err / "out_missing_shard",
        ),
        conv(
            "err_missing_distcp",
            "to-hf",
            "--load",
            d.err / "missing_distcp",
            "--save",
            d.err / "out_missing_distcp",
        ),
        conv("err_unverified", "to-hf", "--load", d.err / "unverified", "--save", d.err / "out_x"),
        conv(
            "unverified_allowed",
            "to-hf",
            "--load",
            d.err / "unverified",
            "--save",
            d.hf / "unverified",
            "--allow-unverified-checkpoint",
        ),
        conv(
            "err_tokenizer_to_hf",
            "to-hf",
            "--load",
            d.ckpt / "gqa_tp1",
            "--save",
            d.err / "out_tokenizer_to_hf",
            "--tokenizer-model",
            d.big_tokenizer,
        ),
        conv(
            "err_tokenizer_from_hf",
            "from-hf",
            "--load",
            d.src / "hf_gqa",
            "--save",
            d.err / "out_tokenizer_from_hf",
            "--tokenizer-model",
            d.big_tokenizer,
        ),
        {
            "name": "pretrain_finetune",
            "module": "megatron_dscoder.pretrain",
            "argv": [
                "--load",
                str(d.meg / "hf_gqa16k_bf16"),
                "--finetune",
                "--mock-data",
                "--train-iters",
                "2",
                "--global-batch-size",
                "2",
                "--seq-length",
                "64",
                "--metrics-jsonl",
                str(d.meg / "finetune.jsonl"),
            ],
        },
        conv(
            "big_from_hf", "from-hf", "--load", d.src / "big", "--save", d.meg / "big", measure=True
        ),
        conv(
            "big_to_hf",
            "to-hf",
            "--load",
            d.meg / "big",
            "--save",
            d.back / "big",
            "--max-shard-size-gb",
            str(4 / 1024),
            measure=True,
        ),
    ]
    return jobs


def build_runs(
    tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, big_tokenizer_dir: Path
) -> SimpleNamespace:
    """Every conversion case of the suite, run once: the saves under torchrun, the HF sources,
    then one worker process converting them all (results by case name in ``.results``)."""
    root = tmp_path_factory.mktemp("convert")
    d = SimpleNamespace(
        **{k: root / k for k in ("ckpt", "hf", "src", "meg", "back", "err")},
        big_tokenizer=big_tokenizer_dir,
    )
    for sub in ("src", "meg", "back", "err", "hf"):
        getattr(d, sub).mkdir()
    jobs_file, results_file = root / "jobs.json", root / "results.json"
    converting = subprocess.Popen(  # imports now, runs the jobs once jobs.json appears
        [sys.executable, str(WORKERS / "convert_cases.py"), str(jobs_file), str(results_file)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        specs = [f"{n}:{tp}:{pp}:{int(mha)}:{int(ext)}" for n, (tp, pp, mha, ext) in SAVES.items()]
        saving = torchrun_background(
            2,
            WORKERS / "save_random.py",
            str(d.ckpt),
            str(tokenizer_dir),
            *specs,
            env={"PYTHONPATH": str(REPO)},
        )
        for n, (mha, dtype, factor) in SOURCES.items():  # meanwhile, HF models from transformers
            make_hf_llama(
                d.src / n,
                mha=mha,
                vocab_rows=ROWS,
                tokenizer=tokenizer_dir,
                dtype=dtype,
                rope_scaling=factor,
                seed=len(n),
            )
        _as_instruct(d.src / "hf_mha")
        d.big_bytes = _write_big_hf(d.src / "big")
        # error inputs
        shutil.copytree(d.src / "hf_gqa", d.err / "not_llama")
        config = json.loads((d.err / "not_llama" / "config.json").read_text())
        config.update(model_type="mistral", architectures=["MistralForCausalLM"])
        (d.err / "not_llama" / "config.json").write_text(json.dumps(config))
        make_hf_llama(d.err / "missing_shard", mha=False, vocab_rows=ROWS, tokenizer=None)
        from transformers import AutoModelForCausalLM

        sharded = AutoModelForCausalLM.from_pretrained(str(d.err / "missing_shard"))
        shutil.rmtree(d.err / "missing_shard")
        sharded.save_pretrained(str(d.err / "missing_shard"), max_shard_size="100KB")
        fidelity_jobs.prepare(d, tokenizer_dir)
        shards = sorted((d.err / "missing_shard").glob("model-*.safetensors"))
        assert len(shards) > 2
        shards[1].unlink()
        out, err = saving.communicate(timeout=300)
        assert saving.returncode == 0, f"{out[-3000:]}\n{err[-6000:]}"
        shutil.copytree(d.ckpt / "gqa_tp2", d.err / "missing_distcp")
        next((d.err / "missing_distcp").glob("iter_*/*.distcp")).unlink()
        shutil.copytree(d.ckpt / "gqa_tp1", d.err / "unverified")
        next((d.err / "unverified").glob("iter_*/checksums.json")).unlink()

        tmp_jobs = root / "jobs.json.tmp"
        tmp_jobs.write_text(json.dumps(_jobs(d) + fidelity_jobs.jobs(d, tokenizer_dir)))
        tmp_jobs.rename(jobs_file)  # the waiting worker starts now
        out, err = converting.communicate(timeout=300)
        assert converting.returncode == 0, err[-6000:]
    finally:
        if converting.poll() is None:  # the fixture failed before the jobs were written
            converting.kill()
            converting.communicate()
    d.results = json.loads(results_file.read_text())
    return d


INSTRUCT_IDS = {"bos_token_id": 32013, "eos_token_id": 32021}  # DeepSeek-Coder-Instruct's


def _as_instruct(model_dir: Path) -> None:
    """Give an HF model DeepSeek-Coder-Instruct's generation settings (eos = ``<|EOT|>``)."""
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, **INSTRUCT_IDS}))
    generation = {**INSTRUCT_IDS, "do_sample": False, "max_new_tokens": 1024}
    (model_dir / "generation_config.json").write_text(json.dumps(generation))


def ok(runs: SimpleNamespace, name: str) -> dict:
    result = runs.results[name]
    assert result["rc"] == 0, (name, result["stdout"], result["stderr"][-3000:])
    return result


def logits_diff(result: dict) -> float:
    match = re.search(r"max abs logits difference (\S+)", result["stdout"])
    assert match, result["stdout"]
    return float(match.group(1))


def hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(hf_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors
