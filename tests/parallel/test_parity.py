"""Parallelism must not change the math: every layout reproduces the single-process run.

From the same seed and the same mock data, each layout's per-iteration ``lm_loss`` and
``grad_norm`` over 5 fp32 iterations equal the one-process run within 1e-6 relative (measured:
1.3e-7 loss, 8.9e-8 grad_norm; before the float64 gradient norm, grad_norm differed by up to
2e-5 between TP layouts on real code). The runs are
the real CLI (``megatron_dscoder.pretrain``) under torchrun with gloo; layouts that share a world
size share one launch. A user reproduces any row with the flags in LAYOUTS.

Megatron-LM's performance features that run on CPU (``FEATURES``) ride in the same launches and
must reproduce their plain layout: ``--overlap-grad-reduce --overlap-param-gather`` with small
buckets (many asynchronous reduce-scatters and all-gathers over gloo), ``--manual-gc`` and an
evaluation after iteration 2; the same overlap saved after iterations 2 and 3 and resumed
without it, so the parameters a deferred all-gather still owes must have reached the checkpoint;
selective recompute of ``core_attn`` and ``mlp`` with ``--manual-gc``. Losses are bitwise equal. The
grad_norm of the run with small buckets may move by fp32 rounding only (measured 5.1e-8
relative): each rank rounds the norm of its optimizer shard to fp32 before the sum over ranks,
and buckets move the shard boundaries.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.launch import WORKERS, python_module, read_jsonl, torchrun

# --lr 3e-4 is in the range of the real sizes' peaks (3.5e-4 to 5.3e-4). At the debug recipe's
# toy LR (3e-3) Adam's normalisation amplifies 1e-6 summation-order differences in near-zero
# gradient elements, and by iteration 4 grad_norm differs by ~1e-4 across TP layouts while the
# loss still agrees to 1e-7.
COMMON = (
    "--model debug --mock-data --train-iters 5 --global-batch-size 8 "
    "--micro-batch-size 1 --seq-length 64 --seed 7 --lr 3e-4"
)
LAYOUTS = {
    2: {
        "tp2_sp": "--tensor-model-parallel-size 2 --sequence-parallel",
        "pp2": "--pipeline-model-parallel-size 2",  # 8 micro-batches through 1F1B
        "dp2_distopt": "--use-distributed-optimizer",
        "tp2_sp_recompute": "--tensor-model-parallel-size 2 --sequence-parallel "
        "--recompute-granularity full --recompute-method uniform",
    },
    4: {
        "tp2_pp2_sp": "--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 "
        "--sequence-parallel",
    },
}

OVERLAP = "--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather"
FEATURES = {  # name: (plain layout, flags); {ckpt} is a fresh directory
    # ~40 buckets (one without overlap): many asynchronous reduce-scatters and all-gathers
    "dp2_overlap_buckets": (
        "dp2_distopt",
        f"{OVERLAP} --ddp-bucket-size 20000 --manual-gc --manual-gc-interval 2 "
        "--eval-interval 2 --eval-iters 1",  # gathered for evaluation, then trains on
    ),
    # saved right after an update whose all-gather the next forward would do, resumed without
    # overlap: a checkpoint of stale parameter shards departs from iteration 4
    "dp2_overlap_save": (
        "dp2_distopt",
        f"{OVERLAP} --save {{ckpt}} --save-interval 2 --exit-interval 3",
    ),
    "dp2_overlap_resume": ("dp2_distopt", "--use-distributed-optimizer --load {ckpt}"),
    "tp2_sp_recompute_modules": (
        "tp2_sp",
        "--tensor-model-parallel-size 2 --sequence-parallel --recompute-granularity selective "
        "--recompute-modules core_attn mlp --manual-gc",
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("parity")
    single = ["--metrics-jsonl", str(out / "single.jsonl")]
    with ThreadPoolExecutor(1) as pool:  # the single-process reference beside the launches
        reference = pool.submit(
            python_module, "megatron_dscoder.pretrain", *COMMON.split(), *single
        )
        for nproc, layouts in LAYOUTS.items():
            args = [str(out)]
            for name, flags in layouts.items():
                args += [name, f"{COMMON} {flags}"]
            if nproc == 2:
                for name, (_, flags) in FEATURES.items():
                    args += [name, f"{COMMON} {flags.format(ckpt=out / 'overlap_ckpt')}"]
            torchrun(nproc, WORKERS / "layouts.py", *args)
        reference.result()
    names = ["single", *(n for layouts in LAYOUTS.values() for n in layouts), *FEATURES]
    return {name: read_jsonl(out / f"{name}.jsonl") for name in names}


def test_single_process_learns(runs):
    losses = [r["lm_loss"] for r in runs["single"]]
    assert len(losses) == 5
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("layout", [n for layouts in LAYOUTS.values() for n in layouts])
def test_layout_matches_single_process(runs, layout):
    ref, got = runs["single"], runs[layout]
    assert [r["iteration"] for r in got] == [1, 2, 3, 4, 5]
    for r, g in zip(ref, got, strict=True):
        for key in ("lm_loss", "grad_norm"):
            assert g[key] == pytest.approx(r[key], rel=1e-6), (layout, r["iteration"], key)


@pytest.mark.parametrize(
    ("parts", "grad_norm_rel"),
    [
        (("dp2_overlap_buckets",), 2e-7),
        (("dp2_overlap_save", "dp2_overlap_resume"), 0.0),
        (("tp2_sp_recompute_modules",), 0.0),
    ],
)
def test_performance_features_match_the_plain_path(runs, parts, grad_norm_rel):
    plain = runs[FEATURES[parts[0]][0]]
    got = [record for part in parts for record in runs[part] if "lm_loss" in record]
    evaluated = [r["iteration"] for part in parts for r in runs[part] if "val_loss" in r]
    assert evaluated == ([2, 4] if "--eval-interval" in FEATURES[parts[0]][1] else [])
    assert [r["iteration"] for r in got] == [1, 2, 3, 4, 5]
    for r, g in zip(plain, got, strict=True):
        assert g["lm_loss"] == r["lm_loss"], (parts, r["iteration"])
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=grad_norm_rel, abs=0), (
            parts,
            r["iteration"],
        )
