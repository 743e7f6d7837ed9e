"""Attention backends: ``sdpa`` computes what megatron-core's unfused attention computes.

* one layer (GQA, MHA, MQA, interpolated RoPE): logits and every gradient agree;
* training, fp32: 5 iterations' loss and grad_norm agree to 1e-6 relative at TP=1, TP=2 with
  sequence parallelism (also under selective and full recomputation) and PP=2;
* a checkpoint saved with ``unfused`` resumes with ``sdpa`` on the same trajectory;
* a backend that cannot run here stops before the model is built, with one line and status 2.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.launch import REPO, WORKERS, read_jsonl, torchrun

COMMON = (
    "--model debug --mock-data --train-iters 5 --global-batch-size 8 "
    "--micro-batch-size 1 --seq-length 64 --seed 7 --lr 3e-4"
)
TP2_SP = "--tensor-model-parallel-size 2 --sequence-parallel"
# Two-rank runs, named LAYOUT_BACKEND; PAIRS maps each checked case to (sdpa run, unfused run).
# Recomputation does not change the math, so recomputed sdpa runs face the plain unfused run.
TWO_RANKS = {
    "tp2_sp_unfused": TP2_SP,
    "tp2_sp_sdpa": TP2_SP,
    "tp2_sp_selective_sdpa": f"{TP2_SP} --recompute-granularity selective",
    "tp2_sp_full_sdpa": f"{TP2_SP} --recompute-granularity full --recompute-method uniform",
    "pp2_unfused": "--pipeline-model-parallel-size 2",
    "pp2_sdpa": "--pipeline-model-parallel-size 2",
}
PAIRS = {
    "tp1": ("tp1_sdpa", "tp1_unfused"),
    "tp2_sp": ("tp2_sp_sdpa", "tp2_sp_unfused"),
    "tp2_sp_selective": ("tp2_sp_selective_sdpa", "tp2_sp_unfused"),
    "tp2_sp_full": ("tp2_sp_full_sdpa", "tp2_sp_unfused"),
    "pp2": ("pp2_sdpa", "pp2_unfused"),
}
BACKENDS = ("unfused", "sdpa")
LONG = "--model debug-4k --mock-data --seed 3 --global-batch-size 2"


def one_layer_diffs(backend: str) -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests/model/workers/attention_layer.py"), backend],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)
    assert set(results) == {"gqa", "mha", "mqa", "gqa_rope_interpolated"}
    for case, r in results.items():
        assert r["same_keys"] and r["grad_names"] == 9, case
    return results


def test_one_layer_matches_unfused():
    import torch

    tol = 2e-2 if torch.cuda.is_available() else 5e-6  # bf16 on a GPU, fp32 on a CPU
    for case, r in one_layer_diffs("sdpa").items():
        assert r["logits"] < tol and r["grads"] < tol, (case, r)


@pytest.mark.gpu
def test_flash_one_layer_matches_unfused():
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
        pytest.skip("needs CUDA and flash-attn")
    for case, r in one_layer_diffs("flash").items():
        assert r["logits"] < 2e-2 and r["grads"] < 2e-2, (case, r)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("attention")
    ckpt = out / "ckpt"
    single = [str(out)]
    for backend in BACKENDS:
        single += [f"tp1_{backend}", f"{COMMON} --attention-backend {backend}"]
    single += [
        "unfused_to_3",
        f"{COMMON} --attention-backend unfused --save {ckpt} --exit-interval 3",
        "sdpa_resumed",
        f"{COMMON} --attention-backend sdpa --load {ckpt} --save {ckpt}",
        "debug4k_stage1",
        f"{LONG} --seq-length 64 --train-iters 1 --save {out / 'ckpt4k'}",
        "extend_2k_sdpa",
        f"{LONG} --stage extend-context --load {out / 'ckpt4k'} --save {out / 'ckpt16k'} "
        "--seq-length 2048 --train-iters 2 --global-batch-size 1 --attention-backend sdpa",
    ]
    pairs = [str(out)]
    for name, flags in TWO_RANKS.items():
        backend = name.rsplit("_", 1)[1]
        pairs += [name, f"{COMMON} {flags} --attention-backend {backend}"]
    with ThreadPoolExecutor(1) as pool:  # the single-process runs beside the 2-rank launch
        one_rank = pool.submit(python_module_script, WORKERS / "layouts.py", *single)
        torchrun(2, WORKERS / "layouts.py", *pairs)
        one_rank.result()
    runs = {p.stem: read_jsonl(p) for p in out.glob("*.jsonl")}
    runs["extend_meta"] = json.loads(
        (out / "ckpt16k" / "iter_0000002" / "run_config.json").read_text()
    )
    return runs


def python_module_script(script, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-8000:]


@pytest.mark.parametrize("layout", PAIRS)
def test_sdpa_matches_unfused_in_training(runs, layout):
    got, ref = (runs[name] for name in PAIRS[layout])
    assert [r["iteration"] for r in got] == [1, 2, 3, 4, 5]
    for r, g in zip(ref, got, strict=True):
        for key in ("lm_loss", "grad_norm"):
            assert g[key] == pytest.approx(r[key], rel=1e-6), (layout, r["iteration"], key)


def test_unfused_checkpoint_resumes_with_sdpa(runs):
    resumed, ref = runs["sdpa_resumed"], runs["tp1_unfused"]
    assert [r["iteration"] for r in runs["unfused_to_3"]] == [1, 2, 3]
    assert [r["iteration"] for r in resumed] == [4, 5]
    for r, g in zip(ref[3:], resumed, strict=True):
        for key in ("lm_loss", "grad_norm"):
            assert g[key] == pytest.approx(r[key], rel=1e-6), (r["iteration"], key)


def test_16k_recipe_beyond_the_4k_positions_with_sdpa(runs):
    """The real 16K recipe on debug-4k (16,384 positions) at 2,048 tokens; the full 16,384 is
    ``benchmarks/bench_long_context.py`` (about 30 s per step on two cores)."""
    arch = runs["extend_meta"]["arch"]
    assert (arch["max_position_embeddings"], arch["seq_len_interpolation_factor"]) == (16384, 4.0)
    assert arch["rotary_base"] == 100000
    records = runs["extend_2k_sdpa"]
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(math.isfinite(r["lm_loss"]) and 0 < r["grad_norm"] < 1e3 for r in records)


@pytest.mark.parametrize("backend", ["flash", "transformer_engine"])
def test_unavailable_backend_fails_before_build(backend, capsys):
    import torch

    from megatron_dscoder.config import cli

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have the backend")
    with pytest.raises(SystemExit) as exit_info:
        cli.parse(["--model", "debug", "--mock-data", "--attention-backend", backend], 1)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "missing here:" in lines[0] and "a CUDA device" in lines[0]
    assert backend in lines[0]
    # A plan for a GPU cluster is still possible from here.
    _, run = cli.parse(["--model", "1.3b", "--dry-run", "--attention-backend", backend], 1)
    assert run.train.attention_backend == backend


def test_context_parallelism_needs_transformer_engine():
    from megatron_dscoder.config.run import ConfigError, ParallelConfig, RunConfig, TrainConfig
    from megatron_dscoder.model.registry import MODELS

    with pytest.raises(ConfigError, match="context-parallel-size=2 needs"):
        RunConfig(
            model="debug",
            arch=MODELS["debug"],
            parallel=ParallelConfig(context_parallel_size=2, world_size=2),
            train=TrainConfig(
                seq_length=64, global_batch_size=8, lr=1e-3, train_iters=1, attention_backend="sdpa"
            ),
        )
