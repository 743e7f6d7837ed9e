"""The repository-level ablation of DeepSeek-Coder (paper §2.2, Table 7) as a runnable experiment.

    python benchmarks/repo_ablation.py --scale smoke --out out/repo_smoke  # CI, one seed
    python benchmarks/repo_ablation.py --scale cpu --out out/repo_cpu  # ~1 hour, shared 2 cores
    python benchmarks/repo_ablation.py --scale gpu --out out/repo_gpu  # hours, one GPU, ~110M

Question: does training on repository-level samples (the files of a repository concatenated in
Algorithm 1 dependency order, each under its path comment) teach a model to use the files a file
imports more than training on the same files one by one?

Repositories: each top-level package of this interpreter's standard library and installed
site-packages is one checkout (``stdlib/email`` holds ``email/utils.py``; vendored copies left
out). Held-out repositories, drawn by a hash of the name among those whose files import each
other, are never trained on (nor a training file that is a near-copy of a held-out one). The
training files go through the real tools: ``dscoder-train-tokenizer``, ``dscoder-preprocess``
(FIM, filters, near-dedup and decontamination off: they act per sample, so they would treat the
layouts differently), ``python -m megatron_dscoder.pretrain`` (same seed, iterations and batch:
the same tokens), ``dscoder-convert to-hf``. The one difference between the two settings:
``repo-level`` is the default (one sample per connected component of a repository's import graph,
files in Algorithm 1 order under path comments), ``file-level`` adds ``--no-repo-level`` (one
sample per file, still under its path comment; the trainer's dataset shuffles documents).

Measure, on held-out repositories: for a file F importing files I1..Ik of its repository, F's
first ``score_tokens`` tokens (path comment included) are scored after ``context_tokens`` tokens
of context, *related* (the tail of I1..Ik laid out as a repository-level sample) or *unrelated*
(the related context of a file of another held-out repository: both conditions use the same set
of windows, only paired differently). ``gain`` = unrelated loss - related loss (nats/token,
positive when the imports help). The ``ident`` variants score only the tokens of occurrences in F
of names defined at the top level of I1..Ik and visible in the related window.

Writes ``results.json`` (per-seed values, mean, sample std, every case's numbers),
``repo_ablation.md`` (the table) and ``repo_ablation.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from ablation_training import TrainScale, cosine_argv, run_tool, train, train_argv
from fim_ablation import _h
from repo_crossfile import evaluate

SETTINGS = {"repo-level": True, "file-level": False}
METRICS = {  # key: label
    "gain": "F's tokens: cross-file gain",
    "loss_related": "F's tokens: loss after its imports",
    "loss_unrelated": "F's tokens: loss after unrelated code",
    "gain_ident": "imported names: cross-file gain",
    "ident_related": "imported names: loss after its imports",
    "ident_unrelated": "imported names: loss after unrelated code",
}
SKIPPED = ("_vendor", "vendored", "_distutils", "__pycache__")


@dataclass(frozen=True)
class Scale(TrainScale):
    heldout_repos: int
    cases_per_repo: int
    context_tokens: int
    seeds: tuple[int, ...] = (1234, 1235, 1236)
    workers: int = 1
    max_repo_chars: int = 1_500_000
    arch: dict | None = None  # a registered-on-the-fly architecture (gpu scale)

    @property
    def score_tokens(self) -> int:
        return self.seq_length - self.context_tokens


SCALES = {
    "smoke": Scale("debug-4k", 512, 512, 2, 2, 3e-3, 1e5, 2, 2, 256, seeds=(1234,),
                   max_repo_chars=120_000),
    "cpu": Scale("debug-4k", 2048, 512, 8, 120, 3e-3, 1.4e6, 12, 16, 256, max_repo_chars=500_000),
    "gpu": Scale(
        "repo-110m", 16384, 2048, 64, 1000, 6e-4, 3e8, 24, 40, 1024, workers=8,
        max_repo_chars=60_000_000,
        arch=dict(num_layers=12, hidden_size=768, ffn_hidden_size=2048, num_attention_heads=12,
                  num_query_groups=12, max_position_embeddings=2048, init_method_std=0.02),
    ),
}  # fmt: skip


def repositories(max_chars: int) -> dict[str, dict[str, str]]:
    """{repository: {path: text}} for every top-level package of the stdlib and of the installed
    distributions in site-packages (.py files of 200 to 100,000 characters), in hash order."""
    from importlib.metadata import packages_distributions

    roots = {"stdlib": sysconfig.get_paths()["stdlib"], "site": sysconfig.get_paths()["purelib"]}
    installed = packages_distributions()
    repos = {}
    for label, root in roots.items():
        for top in sorted(Path(root).iterdir()):
            if not (top / "__init__.py").is_file() or top.name in ("test", "site-packages"):
                continue
            if label == "site" and top.name not in installed:
                continue  # not from an installed distribution
            files, total = {}, 0
            for path in sorted(top.rglob("*.py")):
                rel = path.relative_to(top.parent).as_posix()
                if any(part in SKIPPED for part in rel.split("/")):
                    continue
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if 200 <= len(text) <= 100_000:
                    files[rel] = text
                    total += len(text)
            if files and total <= max_chars:
                repos[f"{label}/{top.name}"] = files
    return dict(sorted(repos.items(), key=lambda kv: (_h(kv[0]), kv[0])))


def import_cases(repo: str, files: dict[str, str], seed: int) -> list[dict]:
    """Per file F that imports other files of ``repo``: F and its imports (Algorithm 1 order)."""
    from megatron_dscoder.preprocess.records import Record
    from megatron_dscoder.preprocess.repo.order import dependency_edges, repo_samples

    records = [Record(text, repo, path, "python") for path, text in files.items()]
    edges = dependency_edges(records, repo)
    position = {p: i for s in repo_samples(repo, records, seed) for i, p in enumerate(s.paths)}
    cases = []
    for f, record in enumerate(records):
        imports = sorted((b for b in range(len(records)) if f in edges[b]), key=lambda b: (
            position[records[b].path], records[b].path))  # fmt: skip
        if imports:
            cases.append({"repo": repo, "path": record.path, "imports": [
                records[b].path for b in imports]})  # fmt: skip
    return sorted(cases, key=lambda c: (_h(c["path"]), c["path"]))


def _inner(path: str) -> str:
    """A file's path inside its package (``httpx/_api.py`` and ``httpx2/_api.py`` meet)."""
    return path.split("/", 1)[-1]


def _similar(a: set[str], b: set[str]) -> bool:
    return len(a & b) >= 0.5 * len(a | b)


def split(scale: Scale, work: Path) -> tuple[Path, dict, list[dict], dict]:
    """Training JSONL (one record per file, ``repo`` and ``path`` set), the held-out
    repositories' files, their evaluation cases, and counts."""
    repos = repositories(scale.max_repo_chars)
    heldout, cases = {}, []
    for repo, files in repos.items():
        if len(heldout) == scale.heldout_repos:
            break
        found = import_cases(repo, files, 0)
        if len(found) >= scale.cases_per_repo and len(files) >= 4:
            heldout[repo] = files
            cases += found[: scale.cases_per_repo]
    held = {_inner(p): set(t.splitlines()) for files in heldout.values() for p, t in files.items()}
    train_path, total, n_repos, n_files, dropped = work / "train.jsonl", 0, 0, 0, 0
    with open(train_path, "w", encoding="utf-8") as out:
        for repo, files in repos.items():
            if repo in heldout or total >= scale.corpus_chars:
                continue
            n_repos += 1
            for path, text in files.items():
                other = held.get(_inner(path))
                if other is not None and _similar(set(text.splitlines()), other):
                    dropped += 1  # a copy of a held-out file (a fork, a renamed package)
                    continue
                out.write(json.dumps({"text": text, "repo": repo, "path": path}) + "\n")
                total += len(text)
                n_files += 1
    counts = {"train_repos": n_repos, "train_files": n_files, "train_chars": total,
              "dropped_copies_of_heldout": dropped, "heldout_repos": sorted(heldout),
              "cases": len(cases)}  # fmt: skip
    return train_path, heldout, cases, counts


def summarize(runs: list[dict]) -> dict:
    out = {}
    for name in SETTINGS:
        out[name] = {}
        for key in METRICS:
            xs = [r[key] for r in runs if r["setting"] == name]
            std = statistics.stdev(xs) if len(xs) > 1 else 0.0
            out[name][key] = {"mean": statistics.fmean(xs), "std": std, "values": xs}
    return out


def table(summary: dict, seeds: int) -> str:
    """The per-layout rows, then the gap between layouts against twice the larger seed spread
    (the gap is readable when the ratio exceeds 1)."""
    rows = ["| layout | " + " | ".join(METRICS.values()) + " | seeds |",
            "|---|" + "---|" * len(METRICS) + "---|"]  # fmt: skip
    for name, s in summary.items():
        cells = [f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {seeds} |")
    a, b = (summary[n] for n in SETTINGS)
    cells = []
    for k in METRICS:
        gap, spread = a[k]["mean"] - b[k]["mean"], 2 * max(a[k]["std"], b[k]["std"])
        cells.append(f"{gap:+.4f} ({abs(gap) / spread:.1f}x)" if spread else f"{gap:+.4f}")
    rows.append("| repo − file (gap ÷ 2 std) | " + " | ".join(cells) + " | |")
    return "\n".join(rows)


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    names, colors = list(summary), ["#47a", "#888"]
    panels = [["gain"], ["gain_ident"], ["loss_related", "loss_unrelated"],
              ["ident_related", "ident_unrelated"]]  # fmt: skip
    for ax, keys in zip(axes, panels, strict=True):
        ticks, labels, values = [], [], []
        for i, n in enumerate(names):
            for j, key in enumerate(keys):
                x, stats = i * (len(keys) + 1) + j, summary[n][key]
                ax.bar(x, stats["mean"], yerr=stats["std"], capsize=3, color=colors[i],
                       alpha=1.0 if j == 0 else 0.45)  # fmt: skip
                ax.plot([x] * len(stats["values"]), stats["values"], "k.")
                ticks.append(x)
                cond = "unrelated" if key.endswith("_unrelated") else "imports"
                labels.append(n if len(keys) == 1 else f"{n}\n{cond}")
                values += stats["values"]
        ax.set_xticks(ticks, labels, fontsize=7)
        if len(keys) == 1:
            ax.axhline(0, color="k", lw=0.5)
        else:  # losses: zoom on the differences
            ax.set_ylim(min(values) - 0.1, max(values) + 0.1)
        head = METRICS[keys[0]] if len(keys) == 1 else METRICS[keys[0]].split(":")[0] + ": loss"
        ax.set_title(head + " (nats/token)", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--out", required=True, help="working and output directory")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the scale's")
    p.add_argument("--train-iters", type=int, default=None, help="default: the scale's")
    p.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the table and plot from --out's results.json")  # fmt: skip
    args = p.parse_args()
    if args.train_iters is not None and args.train_iters <= 0:
        p.error("--train-iters must be positive")
    if args.jobs < 1:
        p.error("--jobs must be positive")
    out = Path(args.out)
    if args.report_only:
        return write_report(out, json.loads((out / "results.json").read_text()))
    scale = SCALES[args.scale]
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(args.seeds))
    if args.train_iters:
        scale = dataclasses.replace(scale, train_iters=args.train_iters)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(scale.workers))
    from megatron_dscoder.convert.cli import main as convert
    from megatron_dscoder.preprocess.cli import main as preprocess
    from megatron_dscoder.preprocess.tokenizer.cli import main as train_tokenizer

    started = time.monotonic()
    corpus, heldout, cases, counts = split(scale, out)
    tok = out / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        run_tool(train_tokenizer, ["--input", str(corpus), "--output", str(tok),
                                   "--vocab-size", str(scale.vocab)])  # fmt: skip
    timings, runs, data = {"corpus_and_tokenizer_s": time.monotonic() - started}, [], {}
    for name, repo_level in SETTINGS.items():  # the data do not depend on the seed
        t0, prefix = time.monotonic(), out / "data" / name
        run_tool(preprocess, [
            "--input", str(corpus), "--tokenizer-model", str(tok), "--output-prefix",
            str(prefix), "--workers", str(scale.workers), "--fim-rate", "0", "--seed", "1",
            "--no-filters", "--no-quality", "--no-dedup", "--no-decontaminate", "--no-progress",
            "--stats-json", f"{prefix}.json", *([] if repo_level else ["--no-repo-level"]),
        ])  # fmt: skip
        stats = json.loads(Path(f"{prefix}.json").read_text())
        data[name] = {k: stats[k] for k in ("documents_out", "files_out", "tokens")}
        timings[f"preprocess_{name}_s"] = time.monotonic() - t0

    def fit(key: tuple[int, str]) -> float:  # one training process; returns its seconds
        (seed, name), t1 = key, time.monotonic()
        tag = f"{name}_s{seed}"
        iters, data = scale.train_iters, out / "data" / name
        argv = train_argv(scale.global_batch_size, out, tag, data, tok, seed, iters, 10)
        argv += cosine_argv(scale.seq_length, scale.lr, scale.train_iters)
        (out / f"metrics_{tag}.jsonl").unlink(missing_ok=True)
        train(scale, argv, out / f"train_{tag}.log")
        return time.monotonic() - t1

    keys = [(seed, name) for seed in scale.seeds for name in SETTINGS]
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on their processes
        train_s = dict(zip(keys, pool.map(fit, keys), strict=True))
    for seed, name in keys:
        t2, tag = time.monotonic(), f"{name}_s{seed}"
        ckpt, hf = out / "ckpt" / tag, out / "hf" / tag
        if not (hf / "config.json").exists():
            run_tool(convert, ["to-hf", "--load", str(ckpt), "--save", str(hf),
                               "--tokenizer-model", str(tok)])  # fmt: skip
        result = evaluate(hf, heldout, cases, scale)
        t3 = time.monotonic()
        runs.append({"setting": name, "repo_level": SETTINGS[name], "seed": seed, **result,
                     "train_s": train_s[seed, name], "eval_s": t3 - t2})  # fmt: skip
        print(f"{tag}: gain {result['gain']:+.4f} ({result['loss_unrelated']:.4f} -> "
              f"{result['loss_related']:.4f}), names {result['gain_ident']:+.4f} "
              f"({len(result['cases'])} cases)", flush=True)  # fmt: skip
    tokens = scale.train_iters * scale.global_batch_size * scale.seq_length
    timings["total_s"] = time.monotonic() - started
    report = {
        "scale": args.scale, "config": dataclasses.asdict(scale), "train_tokens": tokens,
        "corpus": counts, "data": data, "runs": runs, "timings": timings,
        "command": " ".join(["python", "benchmarks/repo_ablation.py", *sys.argv[1:]]),
    }  # fmt: skip
    return write_report(out, report)


def write_report(out: Path, report: dict) -> int:
    """``results.json`` (with the summary), ``repo_ablation.md`` and ``.png``; printed table."""
    runs, seeds = report["runs"], report["config"]["seeds"]
    report["summary"] = summary = summarize(runs)
    text = table(summary, len(seeds))
    for name, body in (("results.json", json.dumps(report, indent=1)), ("repo_ablation.md", text)):
        (out / f"{name}.tmp").write_text(body + "\n")
        os.replace(out / f"{name}.tmp", out / name)
    held = len(report["corpus"]["heldout_repos"])
    title = (f"Repository-level ablation, {report['scale']} scale: {report['config']['model']}, "
             f"{report['train_tokens']:,} tokens/run, {len(runs[0]['cases'])} held-out files in "
             f"{held} held-out repositories, seeds {seeds}")  # fmt: skip
    plot(summary, out / "repo_ablation.png", title)
    print(text)
    print(f"wrote {out}/results.json, repo_ablation.md/.png")
    return 0 if all(math.isfinite(r[key]) for r in runs for key in METRICS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
