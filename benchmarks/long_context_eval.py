"""The context-extension effect (DeepSeek-Coder §3.6) at a CPU-sized ratio, as an experiment.

    python benchmarks/long_context_eval.py --scale smoke --jobs 2 --out out/lc_smoke  # the tests'
    python benchmarks/long_context_eval.py --scale cpu --out out/lc_cpu  # ~40 min, 1 busy core
    python benchmarks/long_context_eval.py --scale gpu --out out/lc_gpu  # one GPU, 112M model

The paper trains at 4K, then runs a 16K stage with RoPE base 100000 and linear position
interpolation x4 (``megatron_dscoder.config.recipes.extend_context``), and claims the extended
model stays good past the base length. Here the base length is ``--scale``'s (512 at the cpu
scale) and the extension is the recipe itself, unchanged: factor 4 and base 100000, so 512 -> 2,048
stands for the paper's 4K -> 16K.

Data: the Python of this interpreter's standard library and site-packages, one *repository* per
top-level package (``site/jinja2``, ``stdlib/email``; a top-level module is a repository of one
file). Repositories are split, by a hash of their name, into held-out repositories (never
trained on, never in the tokenizer's corpus) and training repositories, whole repositories taken
in hash order up to the scale's character budget. Through the project's real tools, per seed:

1. ``dscoder-train-tokenizer`` on the training files (once), ``dscoder-preprocess`` with its
   default repository-level samples (Algorithm 1 order, path comments), FIM off (once);
2. base: ``python -m megatron_dscoder.pretrain`` at the base length;
3. extension: ``python -m megatron_dscoder.pretrain --stage extend-context --load BASE`` (the
   recipe's RoPE, 4x sequences, LR held at 10 % of the peak, the base run's batch);
4. ``dscoder-convert to-hf`` of both checkpoints.

Held-out documents are the held-out repositories laid out by the preprocessor's own
``repo_samples`` (the same Algorithm 1 order and path comments), tokenized, EOS first as in
training, and cut into non-overlapping windows of the extended length (4x base). Each HF model is
measured with transformers (fp32) on every window: next-token cross-entropy (nats/token) by the
position of the predicted token, averaged in buckets of the base length. Three conditions:

- ``base, no scaling``: the base export, positions past its length extrapolated (RoPE base 10000);
- ``base + recipe RoPE, no training``: the base weights under the extension's RoPE (the base
  export's ``config.json`` with ``rope_theta``, ``rope_scaling`` linear x4 and 4x
  ``max_position_embeddings`` from the recipe; checked equal to the extended export's);
- ``extended``: the export of the ``--stage extend-context`` checkpoint.

Writes ``results.json`` (every per-seed value, mean, sample std, the command),
``long_context_eval.md`` (the table) and ``long_context_eval.png`` (loss vs position) under
``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_training import cosine_argv, run_tool, train, train_argv
from long_context_data import SEED, build_corpus, heldout_windows

CONDITIONS = ("base, no scaling", "base + recipe RoPE, no training", "extended")


@dataclass(frozen=True)
class Scale:
    model: str
    arch: dict
    vocab: int
    global_batch_size: int
    base_iters: int
    extend_iters: int
    lr: float
    corpus_chars: float
    heldout_repos: int
    eval_windows: int
    seeds: tuple[int, ...] = (1234, 1235, 1236)
    fine_bucket: int = 64  # resolution of the plotted curve (tokens)
    max_repo_chars: float = 2e6  # larger packages (torch, transformers) are left out entirely
    stdlib_only: bool = False  # the smoke scale: no scan of site-packages

    @property
    def base_length(self) -> int:
        return self.arch["max_position_embeddings"]


def _arch(layers: int, hidden: int, heads: int, base_length: int) -> dict:
    return dict(num_layers=layers, hidden_size=hidden, ffn_hidden_size=hidden * 11 // 4,
                num_attention_heads=heads, num_query_groups=heads,
                max_position_embeddings=base_length, init_method_std=0.02)  # fmt: skip


SCALES = {
    "smoke": Scale("lc-smoke", _arch(2, 32, 2, 32), 512, 2, 2, 1, 3e-3, 6e4, 2, 4, (1, 2), 8,
                   stdlib_only=True),
    "cpu": Scale("lc-cpu", _arch(4, 64, 2, 512), 2048, 8, 100, 20, 3e-3, 3e6, 12, 32),
    "gpu": Scale("lc-110m", _arch(12, 768, 12, 1024), 16384, 64, 2000, 250, 6e-4, 3e8, 24, 192,
                 max_repo_chars=1e9),
}  # fmt: skip


def scaled_config(base_hf: Path, out: Path) -> dict:
    """The base export with the extension recipe's RoPE in ``config.json`` (weights shared)."""
    from megatron_dscoder.config.recipes import EXTEND_CONTEXT as ext

    out.mkdir(parents=True, exist_ok=True)
    for item in base_hf.iterdir():
        if item.name != "config.json" and not (out / item.name).exists():
            (out / item.name).symlink_to(item.resolve())
    config = json.loads((base_hf / "config.json").read_text())
    config["max_position_embeddings"] *= ext.factor
    config["rope_theta"] = ext.rotary_base
    config["rope_scaling"] = {"type": "linear", "factor": float(ext.factor)}
    (out / "config.tmp").write_text(json.dumps(config, indent=2) + "\n")
    os.replace(out / "config.tmp", out / "config.json")
    return config


def rope_of(config: dict) -> tuple:
    return config["rope_theta"], config.get("rope_scaling"), config["max_position_embeddings"]


def position_losses(hf_dir: Path, windows: list[dict], batch: int = 4) -> list[float]:
    """Mean next-token cross-entropy at each position 0..L-1 over ``windows`` (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).to(device)
    model.eval()
    total = None
    for i in range(0, len(windows), batch):
        ids = torch.tensor([w["ids"] for w in windows[i : i + batch]], device=device)  # [b, L+1]
        with torch.no_grad():
            logits = model(ids[:, :-1]).logits.float()  # [b, L, vocab]
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), ids[:, 1:], reduction="none"
        )  # [b, L]
        total = nll.sum(0) if total is None else total + nll.sum(0)
    return (total / len(windows)).cpu().tolist()


def buckets(curve: list[float], width: int) -> list[float]:
    return [statistics.fmean(curve[i : i + width]) for i in range(0, len(curve), width)]


def summarize(runs: list[dict], key: str) -> dict:
    out = {}
    for name in CONDITIONS:
        per_seed = [r[key] for r in runs if r["condition"] == name]
        cols = list(zip(*per_seed, strict=True))
        out[name] = {
            "mean": [statistics.fmean(c) for c in cols],
            "std": [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols],
            "values": per_seed,
        }
    return out


def table(summary: dict, shift: dict, base: int, seeds: int) -> str:
    """Loss per bucket, and the last bucket minus the first (paired per seed), per condition."""
    n = len(next(iter(summary.values()))["mean"])
    heads = [f"{i * base}–{(i + 1) * base}" for i in range(n)] + ["last − first"]
    rows = [f"| condition | {' | '.join(heads)} | seeds |", "|---|" + "---|" * (n + 2)]
    for name, s in summary.items():
        pairs = [*zip(s["mean"], s["std"], strict=True), (shift[name]["mean"][0],
                                                          shift[name]["std"][0])]  # fmt: skip
        cells = [f"{m:+.3f} ± {sd:.3f}" if i == n else f"{m:.3f} ± {sd:.3f}"
                 for i, (m, sd) in enumerate(pairs)]  # fmt: skip
        rows.append(f"| {name} | {' | '.join(cells)} | {seeds} |")
    return "\n".join(rows)


def plot(summary: dict, width: int, base: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    styles = (
        ("#c44", "-", 2.4),
        ("#d90", "--", 1.4),
        ("#36b", "-", 1.4),
    )  # a dashed 2nd: 1st shows
    for (name, s), (color, ls, lw) in zip(summary.items(), styles, strict=True):
        x = [(i + 0.5) * width for i in range(len(s["mean"]))]
        lo = [m - sd for m, sd in zip(s["mean"], s["std"], strict=True)]
        hi = [m + sd for m, sd in zip(s["mean"], s["std"], strict=True)]
        ax.plot(x, s["mean"], color=color, ls=ls, lw=lw, label=name)
        ax.fill_between(x, lo, hi, color=color, alpha=0.25)
    ax.axvline(base, color="k", ls=":", lw=1, label=f"base length {base}")
    ax.set_xlabel(f"position in context (tokens, buckets of {width})")
    ax.set_ylabel("held-out loss (nats/token)\nmean ± std over seeds", fontsize=9)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def _last_loss(metrics: Path) -> float:
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return float([m for m in lines if "lm_loss" in m][-1]["lm_loss"])


def train_stage(scale: Scale, stage: str, seed: int, out: Path, tok: Path) -> float:
    """One training run (``base`` or ``extended`` from that seed's base), its final loss."""
    tag, iters = f"{stage}_s{seed}", scale.base_iters if stage == "base" else scale.extend_iters
    data = out / "data" / "code"
    argv = train_argv(scale.global_batch_size, out, tag, data, tok, seed, iters, 10)
    if stage == "base":
        argv += cosine_argv(scale.base_length, scale.lr, scale.base_iters)
    else:  # the recipe: RoPE base 1e5 x4 linear, 4x sequences, LR 10 % of the peak, constant
        argv += ["--stage", "extend-context", "--load", str(out / "ckpt" / f"base_s{seed}")]
    metrics = out / f"metrics_{tag}.jsonl"
    if _checkpoint(out / "ckpt" / tag)[0].name == f"iter_{iters:07d}" and metrics.exists():
        return _last_loss(metrics)  # a rerun on the same --out: this run is complete
    metrics.unlink(missing_ok=True)
    train(scale, argv, out / f"train_{tag}.log")
    return _last_loss(metrics)


def _checkpoint(root: Path) -> tuple[Path, dict]:
    """The latest checkpoint under ``root`` (a missing one: a nonexistent path) and its arch."""
    from megatron_dscoder.checkpointing.files import (
        find_latest_checkpoint,
        read_checkpoint_metadata,
    )

    ckpt = find_latest_checkpoint(root) if root.exists() else None
    return (ckpt, read_checkpoint_metadata(ckpt)["arch"]) if ckpt else (root / "none", {})


def logits_gap(ckpt: Path, arch: dict, hf_dir: Path, window: list[int], long: bool) -> float:
    """Max |our forward - the HF model| over the logits of one held-out window at the full
    evaluation length: the HF measurement is exactly our model's (``long``: our model under the
    recipe's RoPE, the construction of the second condition)."""
    import torch

    from megatron_dscoder.config.recipes import EXTEND_CONTEXT as ext
    from megatron_dscoder.convert.logits import hf_logits, megatron_logits
    from megatron_dscoder.model.registry import ModelArch, with_long_context

    model = ModelArch(**arch)
    if long and model.seq_len_interpolation_factor is None:
        model = with_long_context(model, ext.factor, ext.rotary_base)
    ids = torch.tensor([window[:-1]])  # [1, L]
    ours = megatron_logits(ckpt, model, ids)[..., : model.vocab_size]
    return float((ours - hf_logits(hf_dir, ids)[..., : model.vocab_size]).abs().max())


def measure_seed(scale: Scale, seed: int, out: Path, tok: Path, windows: list[dict],
                 losses: dict[str, float]) -> list[dict]:  # fmt: skip
    """Both exports of one seed and the three conditions measured on the held-out windows."""
    from megatron_dscoder.convert.cli import main as convert

    hf = {stage: out / "hf" / f"{stage}_s{seed}" for stage in ("base", "extended")}
    for stage, path in hf.items():
        if not (path / "config.json").exists():
            run_tool(convert, ["to-hf", "--load", str(out / "ckpt" / f"{stage}_s{seed}"),
                               "--save", str(path), "--tokenizer-model", str(tok)])  # fmt: skip
    scaled = out / "hf" / f"base_scaled_s{seed}"
    rope = rope_of(scaled_config(hf["base"], scaled))
    extended_rope = rope_of(json.loads((hf["extended"] / "config.json").read_text()))
    if rope != extended_rope:
        raise SystemExit(f"the extended export's RoPE {extended_rope} is not the recipe's {rope}")
    runs = []
    for name, model_dir in zip(CONDITIONS, (hf["base"], scaled, hf["extended"]), strict=True):
        t0 = time.monotonic()
        curve = position_losses(model_dir, windows)
        config = json.loads((model_dir / "config.json").read_text())
        stage = "extended" if name == "extended" else "base"
        ckpt, arch = _checkpoint(out / "ckpt" / f"{stage}_s{seed}")
        gap = logits_gap(ckpt, arch, model_dir, windows[0]["ids"], name != CONDITIONS[0])
        runs.append({"condition": name, "seed": seed, "rope": rope_of(config),
                     "buckets": (b := buckets(curve, scale.base_length)),
                     "last_minus_first": [b[-1] - b[0]],
                     "curve": buckets(curve, scale.fine_bucket),
                     "final_train_loss": losses[f"{stage}_s{seed}"],
                     "max_abs_logits_gap_vs_ours": gap,
                     "eval_s": time.monotonic() - t0})  # fmt: skip
    return runs


def _parameters(scale: Scale, tok: Path) -> int:
    from megatron_dscoder.model.registry import ModelArch
    from megatron_dscoder.tokenizer import load_tokenizer, vocab_size

    return ModelArch(**scale.arch, vocab_size=vocab_size(load_tokenizer(tok))).num_parameters()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--out", required=True, help="working and output directory")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the scale's")
    p.add_argument("--iters", type=int, nargs=2, metavar=("BASE", "EXTEND"), default=None,
                   help="training iterations of the two stages (default: the scale's)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1,
                   help="training runs at a time (default 1: one process)")  # fmt: skip
    args = p.parse_args()
    scale = SCALES[args.scale]
    if args.seeds:
        if len(set(args.seeds)) != len(args.seeds):
            p.error("--seeds must be distinct (each names its runs)")
        scale = dataclasses.replace(scale, seeds=tuple(args.seeds))
    if args.jobs < 1:
        p.error("--jobs must be positive")
    if args.iters:
        if min(args.iters) < 1:
            p.error("--iters must be positive")
        scale = dataclasses.replace(scale, base_iters=args.iters[0], extend_iters=args.iters[1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from megatron_dscoder.preprocess.cli import main as preprocess
    from megatron_dscoder.preprocess.tokenizer.cli import main as train_tokenizer

    started = time.monotonic()
    corpus, heldout = build_corpus(scale, out)
    tok = out / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        run_tool(train_tokenizer, ["--input", str(corpus), "--output", str(tok),
                                   "--vocab-size", str(scale.vocab)])  # fmt: skip
    if not (out / "data" / "code.idx").exists():
        run_tool(preprocess, [
            "--input", str(corpus), "--tokenizer-model", str(tok), "--output-prefix",
            str(out / "data" / "code"), "--workers", "1", "--fim-rate", "0", "--seed", str(SEED),
            "--no-quality", "--no-syntax-check", "--no-decontaminate", "--no-progress",
            "--stats-json", str(out / "data" / "code.json"),
        ])  # fmt: skip
    length = scale.base_length * 4
    windows = heldout_windows(heldout, tok, length, scale.eval_windows)
    if not windows:
        raise SystemExit(f"no held-out sample of {length + 1} tokens; raise heldout_repos")
    timings, runs = {"corpus_tokenizer_preprocess_s": time.monotonic() - started}, []
    losses: dict[str, float] = {}
    for stage in ("base", "extended"):  # every seed's base, then every seed's extension
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:  # each run is its own process
            done = pool.map(
                functools.partial(train_stage, scale, stage, out=out, tok=tok), scale.seeds
            )
            losses.update({f"{stage}_s{s}": v for s, v in zip(scale.seeds, done, strict=True)})
        timings[f"{stage}_training_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    for seed in scale.seeds:
        runs += measure_seed(scale, seed, out, tok, windows, losses)
        print(f"seed {seed}: last-bucket loss " + ", ".join(f"{r['buckets'][-1]:.3f}"
              for r in runs[-3:]), flush=True)  # fmt: skip
    timings["export_and_eval_s"] = time.monotonic() - t0
    summary = {key: summarize(runs, key) for key in ("buckets", "last_minus_first", "curve")}
    timings["total_s"] = time.monotonic() - started
    tokens = {"base": scale.base_iters * scale.global_batch_size * scale.base_length,
              "extension": scale.extend_iters * scale.global_batch_size * length}  # fmt: skip
    report = {
        "scale": args.scale, "config": dataclasses.asdict(scale), "train_tokens": tokens,
        "eval_length": length, "heldout_repos": sorted(heldout),
        "parameters": _parameters(scale, tok),
        "heldout_windows": [{k: w[k] for k in ("repo", "sample", "k")} for w in windows],
        "preprocess": {k: v for k, v in json.loads((out / "data" / "code.json").read_text()).items()
                       if k in ("documents_in", "documents_out", "tokens")},
        "runs": runs, "summary": summary, "timings": timings,
        "command": " ".join(["python", "benchmarks/long_context_eval.py", *sys.argv[1:]]),
    }  # fmt: skip
    text = table(summary["buckets"], summary["last_minus_first"], scale.base_length,
                 len(scale.seeds))  # fmt: skip
    for name, body in (("results.json", json.dumps(report, indent=2)),
                       ("long_context_eval.md", text)):  # fmt: skip
        (out / f"{name}.tmp").write_text(body + "\n")
        os.replace(out / f"{name}.tmp", out / name)
    title = (f"Context extension {scale.base_length} -> {length} (RoPE base 1e5, linear x4), "
             f"{args.scale} scale:\n{tokens['base']:,} + {tokens['extension']:,} tokens, "
             f"{len(windows)} held-out windows, seeds {list(scale.seeds)}")  # fmt: skip
    plot(summary["curve"], scale.fine_bucket, scale.base_length,
         out / "long_context_eval.png", title)  # fmt: skip
    print(text)
    print(f"total {timings['total_s']:.0f}s; wrote {out}/results.json, long_context_eval.md/.png")
    return 0 if all(math.isfinite(v) for r in runs for v in r["curve"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
