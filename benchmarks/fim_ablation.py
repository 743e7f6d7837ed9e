"""The FIM ablation of DeepSeek-Coder (paper §3.1.2, Fig. 3) as a runnable experiment.

    python benchmarks/fim_ablation.py --scale smoke --out out/fim_smoke  # the test suite's
    python benchmarks/fim_ablation.py --scale cpu --out out/fim_cpu --jobs 2  # ~30 min, 2 cores
    python benchmarks/fim_ablation.py --scale gpu --out out/fim_gpu  # hours, one GPU, ~110M model

One real-code corpus (the Python of this interpreter's standard library and site-packages), split
by *file* into training files and held-out files (never trained on). The training files are cut
at line boundaries into documents of at most 1.5 x the context length in characters (FIM then
applies to each document before packing, the "after cutting to the context" reading of the
paper) and, for every seed and every FIM setting, go through the project's real tools with the
same token budget and seed:
``dscoder-train-tokenizer`` (once), ``dscoder-preprocess --fim-rate R --fim-spm-rate Q --seed S``,
``python -m megatron_dscoder.pretrain``, ``dscoder-convert to-hf``; the HF model is then measured
on the held-out documents by ``fim_metrics.evaluate`` (held-out left-to-right loss, held-out FIM
loss in the PSM and SPM layouts, single-line infilling exact match and edit similarity); the
report adds each model's FIM loss minus its own left-to-right loss (``fim_excess_*``).

Settings: FIM 0 %, 50 % PSM, 50 % with half of the FIM samples in SPM (``--fim-spm-rate 0.5``)
and 100 % PSM. The paper's fourth setting, 50 % MSP (T5-style masked span prediction as in
CodeGen2.5), is not run: it needs per-span sentinel tokens that DeepSeek's tokenizer does not have
and a multi-span layout that the preprocessing pipeline does not build, so any version here would
be a different objective under the paper's name.

Writes ``results.json`` (per-seed values and training-loss curves, mean, sample std),
``fim_ablation.md`` (the table) and ``fim_ablation.png`` under ``--out``, and prints the table.
Each finished run is kept in ``--out``/runs/ and reused when the command is run again.
The cpu and gpu scales register their architecture for their training processes only
(``ablation_training``); the smoke scale uses the registry's ``debug`` model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_training import TrainScale, cosine_argv, loss_curve, run_tool, train, train_argv
from fim_metrics import edit_similarity, evaluate

__all__ = ["chunks", "edit_similarity", "evaluate", "plot", "python_files", "summarize", "table"]

# name: (--fim-rate, --fim-spm-rate)
SETTINGS = {
    "FIM 0%": (0.0, 0.0),
    "FIM 50% PSM": (0.5, 0.0),
    "FIM 50% PSM+SPM": (0.5, 0.5),
    "FIM 100% PSM": (1.0, 0.0),
}
METRICS = {  # key: (label, scale for display)
    "l2r_loss": ("held-out L2R loss (nats/token)", 1.0),
    "fim_loss_psm": ("held-out FIM loss, PSM (nats/token)", 1.0),
    "fim_loss_spm": ("held-out FIM loss, SPM (nats/token)", 1.0),
    "fim_excess_psm": ("FIM loss PSM − L2R loss (nats/token)", 1.0),
    "fim_excess_spm": ("FIM loss SPM − L2R loss (nats/token)", 1.0),
    "infill_em": ("single-line infilling EM (%)", 100.0),
    "infill_edit_sim": ("infilling edit similarity (%)", 100.0),
}


@dataclass(frozen=True)
class Scale(TrainScale):
    heldout_files: int
    eval_docs: int
    seeds: tuple[int, ...] = (1234, 1235)
    workers: int = 2
    arch: dict | None = None  # a registered-on-the-fly architecture (cpu and gpu scales)
    infill_docs: int | None = None  # greedy infilling on the first N held-out docs (None: all)
    settings: tuple[str, ...] = tuple(SETTINGS)


# 2 layers, hidden 128, SwiGLU 352, 4 heads in 2 GQA groups: 0.93M parameters with the 2K
# vocabulary (0.56M of them in the untied embedding and output layers); two layers are the fewest
# that can copy from earlier context (prefix and suffix to middle), which infilling needs.
_CPU_ARCH = dict(num_layers=2, hidden_size=128, ffn_hidden_size=352, num_attention_heads=4,
                 num_query_groups=2, max_position_embeddings=4096, init_method_std=0.02,
                 make_vocab_size_divisible_by=128)  # fmt: skip
SCALES = {
    # Plain, PSM and SPM samples all reach the data with the two settings that the smoke runs.
    "smoke": Scale("debug", 512, 128, 4, 3, 3e-3, 1.5e5, 4, 4, workers=1, infill_docs=2,
                   settings=("FIM 0%", "FIM 50% PSM+SPM")),
    "cpu": Scale("fim-1m", 2048, 256, 16, 256, 3e-3, 3e6, 60, 160, seeds=(1234, 1235, 1236),
                 workers=1, arch=_CPU_ARCH, infill_docs=40),
    "gpu": Scale(
        "fim-110m", 16384, 1024, 64, 4000, 6e-4, 6e8, 400, 1000, seeds=(1234, 1235, 1236),
        workers=8,
        arch=dict(num_layers=12, hidden_size=768, ffn_hidden_size=2048, num_attention_heads=12,
                  num_query_groups=12, max_position_embeddings=1024, init_method_std=0.02),
    ),
}  # fmt: skip


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def python_files() -> list[tuple[str, Path]]:
    """(relative name, path) of every .py file of the stdlib and site-packages, shuffled by name."""
    roots = {"stdlib": sysconfig.get_paths()["stdlib"], "site": sysconfig.get_paths()["purelib"]}
    found = {}
    for label, root in roots.items():
        for path in Path(root).rglob("*.py"):
            rel = f"{label}/{path.relative_to(root)}"
            if "site-packages" not in rel.split("/", 1)[1]:
                found[rel] = path
    return sorted(found.items(), key=lambda kv: (_h(kv[0]), kv[0]))


def chunks(text: str, limit: int) -> list[str]:
    """Line-aligned pieces of about ``limit`` characters (a longer line stays whole)."""
    out, cur = [], ""
    for line in text.splitlines(keepends=True):
        if cur and len(cur) + len(line) > limit:
            out.append(cur)
            cur = ""
        cur += line
    return [*out, cur] if cur.strip() else out


def build_corpus(scale: Scale, work: Path) -> tuple[Path, list[dict]]:
    """Training JSONL (one record per document) and the held-out documents (by file)."""
    limit = int(scale.seq_length * 1.5)
    train_path, heldout, total, n_files = work / "train.jsonl", [], 0, 0
    with open(train_path, "w", encoding="utf-8") as f:
        for rel, path in python_files():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if not 500 <= len(text) <= 100_000:
                continue
            pieces = chunks(text, limit)
            if n_files < scale.heldout_files:
                heldout += [{"path": rel, "i": i, "text": p} for i, p in enumerate(pieces)]
            else:
                for i, piece in enumerate(pieces):
                    f.write(json.dumps({"text": piece, "repo": f"{rel}@{i}", "path": rel}) + "\n")
                total += len(text)
            n_files += 1
            if total >= scale.corpus_chars:
                break
    heldout.sort(key=lambda d: _h(f"{d['path']}@{d['i']}"))
    return train_path, heldout[: scale.eval_docs]


def tag_of(rate: float, spm: float, seed: int) -> str:
    """The run's file-name tag: ``fim50_s1234``, ``fim50spm50_s1234``."""
    return f"fim{round(rate * 100)}" + (f"spm{round(spm * 100)}" if spm else "") + f"_s{seed}"


def summarize(runs: list[dict], settings=None, metrics=None) -> dict:
    """{setting: {metric: {mean, std (sample), values}}}, settings in order of first run."""
    settings = settings or list(dict.fromkeys(r["setting"] for r in runs))
    out = {}
    for name in settings:
        vals = [r for r in runs if r["setting"] == name]
        out[name] = {}
        for key in metrics or METRICS:
            xs = [r[key] for r in vals]
            std = statistics.stdev(xs) if len(xs) > 1 else 0.0
            out[name][key] = {"mean": statistics.fmean(xs), "std": std, "values": xs}
    return out


def table(summary: dict, seeds: int, metrics=None) -> str:
    metrics = metrics or METRICS
    rows = [
        "| setting | " + " | ".join(label for label, _ in metrics.values()) + " | seeds |",
        "|---|" + "---|" * len(metrics) + "---|",
    ]
    for name, s in summary.items():
        cells = []
        for key, (_, k) in metrics.items():
            m, sd = k * s[key]["mean"], k * s[key]["std"]
            cells.append(f"{m:.1f} ± {sd:.1f}" if k != 1.0 else f"{m:.4f} ± {sd:.4f}")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(rows)


_COLORS = ["#888", "#4a7", "#a74", "#47a", "#a4a", "#aa4"]


def plot(summary: dict, path: Path, title: str, metrics=None, curves=None) -> None:
    """One bar panel per metric (mean, sample std, every seed as a dot); with ``curves``
    ({setting: [[[iteration, loss], ...] per seed]}) a first panel of training-loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, names = metrics or METRICS, list(summary)
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(names))]
    panels = len(metrics) + bool(curves)
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    if curves:
        ax = axes.pop(0)
        for name, color in zip(names, colors, strict=True):
            for i, curve in enumerate(curves.get(name, [])):
                xs, ys = zip(*curve, strict=True) if curve else ((), ())
                ax.plot(xs, ys, color=color, lw=1, alpha=0.8, label=name if i == 0 else None)
        ax.set_title("training loss (on each setting's own data)", fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.legend(fontsize=7)
    for ax, (key, (label, k)) in zip(axes, metrics.items(), strict=True):
        means = [k * summary[n][key]["mean"] for n in names]
        stds = [k * summary[n][key]["std"] for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=colors)
        for i, n in enumerate(names):
            vals = summary[n][key]["values"]
            ax.plot([i] * len(vals), [k * v for v in vals], "k.")
        ax.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], fontsize=7)
        ax.set_title(label, fontsize=9)
        if k == 1.0:  # losses: zoom on the differences
            lo, hi = min(means) - 2 * max(stds) - 0.02, max(means) + 2 * max(stds) + 0.02
            ax.set_ylim(lo, hi)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _prepare(scale: Scale, out: Path, tok: Path, name: str, seed: int) -> dict:
    """Preprocess one (setting, seed): its data at the setting's FIM rates and the seed."""
    from megatron_dscoder.preprocess.cli import main as preprocess

    rate, spm = SETTINGS[name]
    t0, tag = time.monotonic(), tag_of(rate, spm, seed)
    run_tool(preprocess, [
        "--input", str(out / "train.jsonl"), "--tokenizer-model", str(tok),
        "--output-prefix", str(out / "data" / tag), "--workers", str(scale.workers),
        "--fim-rate", str(rate), "--fim-spm-rate", str(spm), "--seed", str(seed),
        "--no-repo-level", "--no-quality", "--no-syntax-check", "--no-progress",
        "--stats-json", str(out / "data" / f"{tag}.json"),
    ])  # fmt: skip
    return {"setting": name, "fim_rate": rate, "fim_spm_rate": spm, "seed": seed, "tag": tag,
            "preprocess_s": time.monotonic() - t0}  # fmt: skip


def _train(scale: Scale, out: Path, tok: Path, run: dict) -> dict:
    """Train one prepared run in its own process (several may run side by side)."""
    t1, tag = time.monotonic(), run["tag"]
    metrics = out / f"metrics_{tag}.jsonl"
    metrics.unlink(missing_ok=True)
    iters, data = scale.train_iters, out / "data" / tag
    argv = train_argv(scale.global_batch_size, out, tag, data, tok, run["seed"], iters, 30)
    argv += cosine_argv(scale.seq_length, scale.lr, iters)
    train(scale, argv, out / f"train_{tag}.log")
    return {**run, "train_s": time.monotonic() - t1, "train_loss_curve": loss_curve(metrics)}


def _measure(scale: Scale, out: Path, tok: Path, run: dict, heldout: list) -> dict:
    """Export one trained run to HF, measure it, and keep the result under ``out/runs/``."""
    from megatron_dscoder.convert.cli import main as convert

    t2, tag = time.monotonic(), run["tag"]
    hf = out / "hf" / tag
    if not (hf / "config.json").exists():
        run_tool(convert, ["to-hf", "--load", str(out / "ckpt" / tag), "--save", str(hf),
                           "--tokenizer-model", str(tok)])  # fmt: skip
    result = evaluate(hf, heldout, scale.seq_length, scale.infill_docs)
    run = {**run, **result, "eval_s": time.monotonic() - t2}
    print(f"{tag}: L2R {result['l2r_loss']:.4f} FIM psm {result['fim_loss_psm']:.4f} "
          f"spm {result['fim_loss_spm']:.4f} EM {result['infill_em']:.3f} "
          f"sim {result['infill_edit_sim']:.3f}", flush=True)  # fmt: skip
    done = out / "runs" / f"{tag}.json"
    done.parent.mkdir(parents=True, exist_ok=True)
    done.with_suffix(".tmp").write_text(json.dumps(run))
    os.replace(done.with_suffix(".tmp"), done)
    return run


def all_runs(scale: Scale, out: Path, tok: Path, heldout: list, jobs: int) -> list[dict]:
    """Every (seed, setting): preprocessing in this process, then the trainings ``jobs`` at a
    time (each its own process), then export and measurement here. A run finished by an
    interrupted invocation (same ``--out``, same scale) is read back from ``out/runs/``."""
    keys = [(name, seed) for seed in scale.seeds for name in scale.settings]
    done = {k: out / "runs" / f"{tag_of(*SETTINGS[k[0]], k[1])}.json" for k in keys}
    finished = {k: json.loads(p.read_text()) for k, p in done.items() if p.exists()}
    todo = [_prepare(scale, out, tok, *k) for k in keys if k not in finished]
    with ThreadPoolExecutor(jobs) as pool:  # threads only wait on their training processes
        trained = list(pool.map(lambda run: _train(scale, out, tok, run), todo))
    measured = {(r["setting"], r["seed"]): _measure(scale, out, tok, r, heldout) for r in trained}
    return [finished.get(k) or measured[k] for k in keys]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--out", required=True, help="working and output directory")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the scale's")
    p.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    args = p.parse_args()
    if args.jobs < 1:
        p.error("--jobs must be positive")
    scale = SCALES[args.scale]
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(args.seeds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(scale.workers))
    from megatron_dscoder.preprocess.tokenizer.cli import main as train_tokenizer

    started = time.monotonic()
    corpus, heldout = build_corpus(scale, out)
    tok = out / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        run_tool(train_tokenizer, ["--input", str(corpus), "--output", str(tok),
                                   "--vocab-size", str(scale.vocab)])  # fmt: skip
    timings = {"corpus_and_tokenizer_s": time.monotonic() - started}
    runs = all_runs(scale, out, tok, heldout, args.jobs)
    for run in runs:  # the FIM loss beyond the model's own left-to-right loss: what the
        # sentinel layout adds or costs once the model's general quality (and with it most of
        # the seed-to-seed spread) is taken out; the same tokens for every model
        for layout in ("psm", "spm"):
            run[f"fim_excess_{layout}"] = run[f"fim_loss_{layout}"] - run["l2r_loss"]
    summary = summarize(runs, list(scale.settings))
    tokens = scale.train_iters * scale.global_batch_size * scale.seq_length
    timings["total_s"] = time.monotonic() - started  # this invocation (finished runs are reused)
    timings["runs_s"] = sum(r["preprocess_s"] + r["train_s"] + r["eval_s"] for r in runs)
    report = {
        "scale": args.scale, "config": dataclasses.asdict(scale), "train_tokens": tokens,
        "heldout_docs": len(heldout), "runs": runs, "summary": summary, "timings": timings,
        "command": " ".join(["python", "benchmarks/fim_ablation.py", *sys.argv[1:]]),
    }  # fmt: skip
    text = table(summary, len(scale.seeds))
    for name, body in (("results.json", json.dumps(report, indent=2)), ("fim_ablation.md", text)):
        (out / f"{name}.tmp").write_text(body + "\n")
        os.replace(out / f"{name}.tmp", out / name)
    title = (f"FIM ablation, {args.scale} scale: {scale.model}, {tokens:,} tokens/run, "
             f"{len(heldout)} held-out docs, seeds {list(scale.seeds)}")  # fmt: skip
    curves = {n: [r["train_loss_curve"] for r in runs if r["setting"] == n] for n in summary}
    plot(summary, out / "fim_ablation.png", title, curves=curves)
    print(text)
    print(f"total {timings['total_s']:.0f}s; wrote {out}/results.json, fim_ablation.md/.png")
    return 0 if all(math.isfinite(r[key]) for r in runs for key in METRICS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
