"""Attention backends: ``sdpa`` computes what megatron-core's unfused attention computes.

* one layer (GQA, MHA, MQA, interpolated RoPE): logits and every gradient agree;
* training, fp32: 5 iterations' loss and grad_norm agree to 1e-6 relative at TP=1, TP=2 with
  sequence parallelism (also under selective and full recomputation) and PP=2;
* a checkpoint saved with ``unfused`` resumes with ``sdpa`` on the same trajectory;
* a backend that cannot run here stops before the model is built, with one line and status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.launch import REPO, WORKERS, read_jsonl, torchrun

COMMON = (
    "--model debug --mock-data --train-iters 5 --global-batch-size 8 "
    "--micro-batch-size 1 --seq-length 64 --seed 7 --lr 3e-4"
)
TP2_SP = "--tensor-model-parallel-size 2 --sequence-parallel"
TWO_RANKS = {
    "tp2_sp": TP2_SP,
    "tp2_sp_selective": f"{TP2_SP} --recompute-granularity selective",
    "tp2_sp_full": f"{TP2_SP} --recompute-granularity full --recompute-method uniform",
    "pp2": "--pipeline-model-parallel-size 2",
}
BACKENDS = ("unfused", "sdpa")


def test_one_layer_matches_unfused():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests/model/workers/attention_layer.py")],
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
        assert r["logits"] < 5e-6 and r["grads"] < 5e-6, (case, r)


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
    ]
    python_module_script(WORKERS / "layouts.py", *single)
    pairs = [str(out)]
    for name, flags in TWO_RANKS.items():
        for backend in BACKENDS:
            pairs += [f"{name}_{backend}", f"{COMMON} {flags} --attention-backend {backend}"]
    torchrun(2, WORKERS / "layouts.py", *pairs)
    return {p.stem: read_jsonl(p) for p in out.glob("*.jsonl")}


def python_module_script(script, *args: str) -> None:  # noqa: ANN001
    proc = subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-8000:]


@pytest.mark.parametrize("layout", ["tp1", *TWO_RANKS])
def test_sdpa_matches_unfused_in_training(runs, layout):
    ref, got = runs[f"{layout}_unfused"], runs[f"{layout}_sdpa"]
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
    assert run.attention_backend == backend


def test_context_parallelism_needs_transformer_engine():
    from megatron_dscoder.config.run import ConfigError, ParallelConfig, RunConfig, TrainConfig
    from megatron_dscoder.model.registry import MODELS

    with pytest.raises(ConfigError, match="context-parallel-size=2 needs"):
        RunConfig(
            model="debug",
            arch=MODELS["debug"],
            parallel=ParallelConfig(context_parallel_size=2, world_size=2),
            train=TrainConfig(seq_length=64),
            attention_backend="sdpa",
        )
