"""Megatron <-> Hugging Face conversion, end to end, on real parts.

Random-weight debug models (GQA and MHA, and a 16K RoPE-scaled one) are saved by the training
loop's checkpointing at TP=1, TP=2 and PP=2 under torchrun/gloo; random HF ``LlamaForCausalLM``
models are saved by transformers. Every conversion is the real command line
(``tools/convert_checkpoint.py``), all of them in one interpreter to pay the imports once.

Acceptance: ``to-hf --check-logits`` within 1e-4 (fp32) for each layout; HF -> megatron -> HF
bit-identical; a non-Llama config, a missing shard and a too-large tokenizer fail with a clear
message and write nothing. Also: exports of one model from three layouts are identical, the
from-hf checkpoint is chunked exactly like megatron-core's own TP=2 save, and conversion streams.
The same interpreter runs the BOS-policy and v1.5 jobs of :mod:`tests.convert.fidelity_jobs`.
"""

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
    """Start a torchrun launch (gloo, one thread per rank) without waiting for it."""
    cmd = torchrun_cmd(nproc, str(script), *args)
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer_dir: Path, big_tokenizer_dir: Path) -> SimpleNamespace:
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


def _ok(runs: SimpleNamespace, name: str) -> dict:
    result = runs.results[name]
    assert result["rc"] == 0, (name, result["stdout"], result["stderr"][-3000:])
    return result


def _logits_diff(result: dict) -> float:
    match = re.search(r"max abs logits difference (\S+)", result["stdout"])
    assert match, result["stdout"]
    return float(match.group(1))


def _hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(hf_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


@pytest.mark.parametrize("name", list(SAVES))
def test_to_hf_logits_match(runs, name):
    diff = _logits_diff(_ok(runs, f"export_{name}"))
    assert diff <= 1e-4, (name, diff)


def test_export_is_independent_of_the_saving_layout(runs):
    for kind in ("gqa", "mha"):
        ref = _hf_tensors(runs.hf / f"{kind}_tp1")
        assert len(ref) == 2 + 4 * 9 + 1
        for layout in ("tp2", "pp2"):
            got = _hf_tensors(runs.hf / f"{kind}_{layout}")
            assert got.keys() == ref.keys()
            for key in ref:
                assert torch.equal(got[key], ref[key]), (kind, layout, key)


def test_export_loads_offline_with_transformers(runs, tokenizer_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from megatron_dscoder.tokenizer import BOS, EOS

    hf_dir = runs.hf / "gqa_tp2"
    config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.vocab_size == ROWS and config.num_key_value_heads == 2
    assert config.max_position_embeddings == 512
    assert config.rope_parameters["rope_type"] == "linear"
    assert config.rope_parameters["factor"] == 4.0
    assert config.rope_parameters["rope_theta"] == 100000.0
    raw = json.loads((hf_dir / "config.json").read_text())
    assert raw["rope_scaling"] == {"type": "linear", "factor": 4.0}  # DeepSeek's two keys
    assert raw["rope_theta"] == 100000 and isinstance(raw["rope_theta"], int)  # as DeepSeek's
    assert json.loads((runs.hf / "gqa_tp1" / "config.json").read_text())["rope_scaling"] is None
    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    assert len(tok) == TOKENS
    assert config.bos_token_id == tok.convert_tokens_to_ids(BOS)
    assert config.eos_token_id == tok.convert_tokens_to_ids(EOS)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True)
    assert model.lm_head.weight.shape == (ROWS, 64)


@pytest.mark.parametrize("name", list(SOURCES))
def test_hf_megatron_hf_is_bit_identical(runs, name):
    assert _logits_diff(_ok(runs, f"import_{name}")) <= 1e-4
    assert _logits_diff(_ok(runs, f"back_{name}")) <= 1e-4
    src, back = _hf_tensors(runs.src / name), _hf_tensors(runs.back / name)
    assert back.keys() == src.keys()
    for key in src:
        assert back[key].dtype == src[key].dtype, key
        assert torch.equal(back[key], src[key]), key
    index = json.loads((runs.back / name / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(src) and len(set(index["weight_map"].values())) > 2
    src_cfg = json.loads((runs.src / name / "config.json").read_text())
    back_cfg = json.loads((runs.back / name / "config.json").read_text())
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rms_norm_eps",
    ):
        assert back_cfg[key] == src_cfg[key], key
    from transformers import AutoConfig

    src_rope, back_rope = (
        AutoConfig.from_pretrained(str(d / name), local_files_only=True).rope_parameters
        for d in (runs.src, runs.back)
    )
    assert back_rope.items() >= src_rope.items()  # the same RoPE (the legacy form adds "type")
    theta = src_cfg["rope_parameters"]["rope_theta"]
    assert back_cfg["rope_theta"] == theta and type(back_cfg["rope_theta"]) is type(theta)
    assert (runs.back / name / "tokenizer.json").read_bytes() == (
        runs.src / name / "tokenizer.json"
    ).read_bytes()
    for key in ("bos_token_id", "eos_token_id"):  # the source's, not the tokenizer's lookup
        assert back_cfg[key] == src_cfg[key], key
    generation = "generation_config.json"
    src_gen = json.loads((runs.src / name / generation).read_text())
    src_gen.pop("transformers_version", None)
    back_gen = json.loads((runs.back / name / generation).read_text())
    assert back_gen == {**src_gen, "_from_model_config": True}
    if name == "hf_mha":
        assert back_cfg["eos_token_id"] == src_gen["eos_token_id"] == 32021


def test_pretrain_finetunes_from_an_imported_checkpoint(runs):
    """``pretrain --load DST --finetune`` (no --model) continues from a from-hf checkpoint."""
    _ok(runs, "pretrain_finetune")
    records = [
        json.loads(line)
        for line in (runs.meg / "finetune.jsonl").read_text().splitlines()
        if line.strip()
    ]
    losses = [r["lm_loss"] for r in records if "lm_loss" in r]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses), records


def test_from_hf_checkpoint_is_what_pretrain_loads(runs):
    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )

    ckpt = find_latest_checkpoint(runs.meg / "hf_gqa16k_bf16")
    assert ckpt is not None and ckpt.name == "iter_0000000"
    meta = read_checkpoint_metadata(ckpt)
    assert meta["arch"]["num_query_groups"] == 2 and meta["arch"]["vocab_size"] == TOKENS
    assert meta["arch"]["rotary_base"] == 100000
    assert meta["arch"]["seq_len_interpolation_factor"] == 4.0
    assert meta["converted_from"]["tensor_model_parallel_size"] == 2
    from megatron_dscoder.model.registry import ModelArch

    assert ModelArch(**meta["arch"]).padded_vocab_size(2) == ROWS
    assert (Path(meta["tokenizer"]) / "tokenizer.json").is_file()
    from megatron_dscoder.checkpointing.checksums import MANIFEST, verify_manifest

    # written with a manifest like a trained checkpoint: loads verified, not "older version"
    assert (ckpt / MANIFEST).is_file() and verify_manifest(ckpt) == []


def test_from_hf_chunks_like_megatron_core(runs):
    """The streaming writer's TP=2 checkpoint has megatron-core's own keys and chunks."""
    from torch.distributed.checkpoint import FileSystemReader

    _ok(runs, "reimport_gqa_tp2")

    def layout(root: Path) -> dict:
        iter_dir = next(p for p in root.iterdir() if p.name.startswith("iter_"))
        meta = FileSystemReader(str(iter_dir)).read_metadata().state_dict_metadata
        return {
            key: sorted((tuple(c.offsets), tuple(c.sizes)) for c in md.chunks)
            if hasattr(md, "chunks")
            else "bytes"
            for key, md in meta.items()
            if key.startswith(("embedding", "decoder", "output"))
        }

    ours, theirs = layout(runs.meg / "reimport_gqa_tp2"), layout(runs.ckpt / "gqa_tp2")
    assert ours.keys() == theirs.keys()
    assert ours == theirs


@pytest.mark.parametrize(
    "name, message",
    [
        ("err_not_llama", "not a Llama model (model_type='mistral'"),
        ("err_missing_shard", "missing safetensors shard(s) model-00002-of-"),
        ("err_missing_distcp", "shard missing"),
        ("err_tokenizer_to_hf", "the tokenizer has 480 tokens, more than the 384 rows"),
        (
            "err_tokenizer_from_hf",
            "the tokenizer has 480 tokens but the model's embedding has only 384",
        ),
    ],
)
def test_errors_are_clear_and_write_nothing(runs, name, message):
    result = runs.results[name]
    assert result["rc"] == 1, result
    assert message in result["stderr"], result["stderr"]
    out = runs.err / ("out_" + name.removeprefix("err_"))
    assert not out.exists()
    assert not list(runs.err.glob(".out_*")), "a temporary directory was left behind"


def test_conversion_streams(runs):
    """Peak memory above the pre-conversion RSS stays far below the model's size."""
    model_mb = runs.big_bytes / 2**20
    for name in ("big_from_hf", "big_to_hf"):
        result = _ok(runs, name)
        growth = result["peak_mb"] - result["rss_before_mb"]
        print(f"{name}: model {model_mb:.0f} MB, peak RSS growth {growth:.0f} MB")
        assert growth < 0.35 * model_mb, (name, growth, model_mb)
    src, back = _hf_tensors(runs.src / "big"), _hf_tensors(runs.back / "big")
    assert all(torch.equal(src[k], back[k]) for k in src) and src.keys() == back.keys()


def test_bos_policy_from_data_to_generation(runs, tokenizer_dir):
    """Trained without (the default) and with ``--bos``: the data's stats, the checkpoint, every
    file of the export, generation and evaluation say the same; the first prompt id is BOS
    exactly for the ``--bos`` model, and equals what ``AutoTokenizer`` gives."""
    from transformers import AutoTokenizer

    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )
    from megatron_dscoder.evaluation.generate import Generator
    from megatron_dscoder.evaluation.humaneval import load_hf_model
    from megatron_dscoder.tokenizer import BOS, load_tokenizer

    bos_id = load_tokenizer(tokenizer_dir).token_to_id(BOS)
    prompt = "def add(a, b):\n"
    for bos in (False, True):
        _ok(runs, f"train_bos_{int(bos)}")
        _ok(runs, f"export_bos_{int(bos)}")
        assert json.loads((runs.data / f"bos_{int(bos)}.json").read_text())["bos"] is bos
        meta = read_checkpoint_metadata(find_latest_checkpoint(runs.meg / f"train_bos_{int(bos)}"))
        assert meta["data"]["bos"] is bos
        export = runs.hf / f"train_bos_{int(bos)}"
        assert json.loads((export / "tokenizer_config.json").read_text())["add_bos_token"] is bos
        ids = Generator(export).prompt_ids(prompt)
        assert (ids[0] == bos_id) is bos, (bos, ids[:3])
        hf_ids = AutoTokenizer.from_pretrained(str(export), local_files_only=True)(prompt)
        assert hf_ids["input_ids"] == ids
        assert load_hf_model(str(export), temperature=0.0, dtype="float32").generator.add_bos is bos
        assert (Generator(export, add_bos=not bos).prompt_ids(prompt)[0] == bos_id) is not bos
    assert runs.results["err_bos_on_plain_data"]["rc"] == 2
    assert not (runs.err / "out_bos").exists()


def test_v15_imports_continues_with_the_recipe_and_exports(runs):
    """A DeepSeek-Coder-v1.5-shaped model (102,400 rows, DeepSeek-LLM's tokenizer structure)
    through from-hf, two iterations of ``--stage continue-pretrain``, and to-hf."""
    from megatron_dscoder.checkpointing.checkpoint import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )

    assert _logits_diff(_ok(runs, "import_v15")) <= 1e-4
    _ok(runs, "continue_v15")
    meta = read_checkpoint_metadata(find_latest_checkpoint(runs.meg / "v15_continued"))
    assert meta["iteration"] == 2 and meta["train"]["lr"] == pytest.approx(4.2e-4)
    assert meta["train"]["train_tokens"] == 2e12 and meta["data"]["bos"] is False
    assert _logits_diff(_ok(runs, "export_v15")) <= 1e-4
    config = json.loads((runs.hf / "v15" / "config.json").read_text())
    assert config["vocab_size"] == 102400 and config["rope_theta"] == 10000.0
    assert config["rope_scaling"] is None and config["num_key_value_heads"] == 4


def test_a_tokenizer_not_the_checkpoints_is_refused_before_anything_is_built(runs):
    refused = runs.results["err_v15_coder_tokenizer"]
    assert refused["rc"] == 2, refused
    assert "--allow-vocab-mismatch" in refused["stderr"] and TOKENS_TEXT in refused["stderr"]
    assert not (runs.err / "out_v15").exists()
