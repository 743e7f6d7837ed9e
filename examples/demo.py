"""``make demo``: the whole DeepSeek-Coder flow on one CPU machine, in minutes.

    python examples/demo.py --output out/demo

1. a corpus of real code already on the machine: packages of the Python standard library, each
   treated as a repository checkout (no download);
2. ``tools/train_tokenizer.py``: a byte-level BPE with DeepSeek-Coder's special tokens;
3. ``tools/preprocess_data.py``: filters, quality screening, repository-level dependency
   ordering, FIM at 0.5, Megatron ``.bin``/``.idx``, and the data report (``data/report/``:
   Markdown + PNG charts per language and per stage);
4. pretraining of the ``debug`` model with TP=2 + sequence parallelism on two CPU processes,
   checkpointing, then a resume from the checkpoint to the end of the schedule;
5. the 16K context-extension stage, scaled down (128 -> 512 tokens), from those weights;
6. a loss-curve PNG, TensorBoard logs and an offline W&B run, all under ``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

logger = logging.getLogger("demo")

PACKAGES = (
    "json",
    "email",
    "http",
    "logging",
    "asyncio",
    "concurrent",
    "importlib",
    "unittest",
    "xml",
    "urllib",
    "collections",
    "sqlite3",
    "multiprocessing",
    "xmlrpc",
    "wsgiref",
    "dbm",
    "html",
    "zoneinfo",
    "tomllib",
    "re",
)
REPO_ROOT = Path(__file__).resolve().parents[1]


def build_corpus(out: Path) -> Path:
    """Copy standard-library packages (``.py`` only) as one repository checkout each."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    for name in PACKAGES:
        src = stdlib / name
        if src.is_dir():
            shutil.copytree(
                src,
                corpus / name,
                ignore=shutil.ignore_patterns("__pycache__", "test", "tests", "*.pyc"),
            )
    size = sum(p.stat().st_size for p in corpus.rglob("*.py"))
    logger.info("corpus: %d packages, %.1f MB of Python", len(list(corpus.iterdir())), size / 1e6)
    return corpus


def step(title: str, cmd: list[str]) -> None:
    """Run one stage, streaming its output, and time it."""
    logger.info("== %s", title)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    logger.info("   done in %.0f s", time.perf_counter() - start)


def pretrain(out: Path, *flags: str) -> list[str]:
    """torchrun command for the debug model with TP=2 + SP on two CPU processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "-m",
        "megatron_dscoder.pretrain",
        "--model",
        "debug",
        "--tensor-model-parallel-size",
        "2",
        "--sequence-parallel",
        "--tokenizer-model",
        str(out / "tokenizer"),
        "--data-path",
        str(out / "data" / "code"),
        "--split",
        "98,2,0",
        "--data-cache-path",
        str(out / "data" / "cache"),
        "--tensorboard-dir",
        str(out / "tensorboard"),
        "--wandb-project",
        "megatron_dscoder",
        "--wandb-save-dir",
        str(out),
        "--log-interval",
        "10",
        *flags,
    ]


def plot(out: Path, resumed_at: int) -> Path:
    """Loss curves of both stages into ``loss.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, label in (
        ("pretrain", "4K stage (128 tokens here)"),
        ("extend", "16K stage (512 tokens here)"),
    ):
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        train = {r["iteration"]: r["lm_loss"] for r in rows if r.get("lm_loss") is not None}
        offset = 0 if name == "pretrain" else max(_losses(out / "pretrain.jsonl"))
        ax.plot([i + offset for i in train], list(train.values()), label=label)
        evals = [(r["iteration"] + offset, r["val_loss"]) for r in rows if "val_loss" in r]
        if evals:
            ax.scatter(*zip(*evals, strict=True), marker="o", s=18, label=f"{label}: validation")
    ax.axvline(resumed_at, color="grey", linestyle=":", label="killed, resumed from checkpoint")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("megatron_dscoder demo: debug model, TP=2 + SP on CPU")
    ax.legend()
    path = out / "loss.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _losses(path: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["iteration"]: r["lm_loss"] for r in rows if r.get("lm_loss") is not None}


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit status 1 if the loss did not fall."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="out/demo", help="folder for every artefact")
    parser.add_argument("--train-iters", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.output).resolve()
    for stale in ("pretrain.jsonl", "extend.jsonl", "checkpoints", "tensorboard", "wandb"):
        shutil.rmtree(out / stale, ignore_errors=True) if (out / stale).is_dir() else (
            out / stale
        ).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus = build_corpus(out)
    py = sys.executable
    step(
        "1/5 train the tokenizer (byte-level BPE, DeepSeek-Coder specials)",
        [
            py,
            "tools/train_tokenizer.py",
            "--input",
            str(corpus),
            "--output",
            str(out / "tokenizer"),
            "--vocab-size",
            "8000",
        ],
    )
    step(
        "2/5 preprocess: filters, repository ordering, FIM 0.5 -> .bin/.idx",
        [
            py,
            "tools/preprocess_data.py",
            "--input",
            str(corpus),
            "--tokenizer-model",
            str(out / "tokenizer"),
            "--output-prefix",
            str(out / "data" / "code"),
            "--workers",
            "2",
            "--fim-rate",
            "0.5",
            "--seed",
            "1234",
            "--stats-json",
            str(out / "data" / "stats.json"),
            "--report",
            str(out / "data" / "report"),
        ],
    )
    iters, ckpt = args.train_iters, out / "checkpoints"
    common = [
        "--train-iters",
        str(iters),
        "--global-batch-size",
        "16",
        "--micro-batch-size",
        "4",
        "--lr",
        "3e-3",
        "--lr-warmup-iters",
        str(iters // 20),
        "--seq-length",
        "128",
        "--save",
        str(ckpt / "pretrain"),
        "--load",
        str(ckpt / "pretrain"),
        "--eval-interval",
        str(iters // 4),
        "--eval-iters",
        "2",
        "--metrics-jsonl",
        str(out / "pretrain.jsonl"),
        "--wandb-exp-name",
        "pretrain",
    ]
    step(
        f"3/5 pretrain debug, TP=2 + SP, interrupted at iteration {iters // 2}",
        pretrain(
            out, *common, "--save-interval", str(iters // 4), "--exit-interval", str(iters // 2)
        ),
    )
    step(
        "4/5 resume from the checkpoint and finish the three-stage schedule",
        pretrain(out, *common, "--save-interval", str(iters // 4)),
    )
    step(
        "5/5 16K context-extension stage (scaled: 128 -> 512 tokens), from the 4K weights",
        pretrain(
            out,
            "--stage",
            "extend-context",
            "--load",
            str(ckpt / "pretrain"),
            "--save",
            str(ckpt / "extend-16k"),
            "--seq-length",
            "512",
            "--train-iters",
            "20",
            "--global-batch-size",
            "4",
            "--micro-batch-size",
            "1",
            "--eval-interval",
            "20",
            "--eval-iters",
            "1",
            "--log-interval",
            "2",
            "--metrics-jsonl",
            str(out / "extend.jsonl"),
            "--wandb-exp-name",
            "extend-16k",
        ),
    )
    losses = _losses(out / "pretrain.jsonl")
    first, last = losses[min(losses)], losses[max(losses)]
    png = plot(out, resumed_at=iters // 2)
    logger.info(
        "loss %.3f -> %.3f over %d iterations; 16K stage ends at %.3f",
        first,
        last,
        max(losses),
        list(_losses(out / "extend.jsonl").values())[-1],
    )
    logger.info("finished in %.1f min. Artefacts in %s:", (time.perf_counter() - started) / 60, out)
    for name, path in (
        ("loss curve", png),
        ("TensorBoard", out / "tensorboard"),
        ("W&B offline runs", out / "wandb"),
        ("checkpoints", ckpt),
        ("data + stats", out / "data"),
        ("tokenizer", out / "tokenizer"),
    ):
        logger.info("  %-17s %s", name, path)
    return 0 if last < first - 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
