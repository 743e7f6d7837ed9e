"""The FIM ablation of DeepSeek-Coder (paper §3.1.2, Fig. 3) as a runnable experiment.

    python benchmarks/fim_ablation.py --scale smoke --out out/fim_smoke  # CI, about 2 minutes
    python benchmarks/fim_ablation.py --scale cpu --out out/fim_cpu  # about 30 minutes, 2 cores
    python benchmarks/fim_ablation.py --scale gpu --out out/fim_gpu  # hours, one GPU, ~110M model

One real-code corpus (the Python of this interpreter's standard library and site-packages), split
by *file* into training files and held-out files (never trained on). The training files are cut
at line boundaries into documents of about one context length (FIM then applies to each document
before packing, the "after cutting to the context" reading of the paper) and, for every seed and
every FIM setting, go through the project's real tools with the same token budget and seed:
``dscoder-train-tokenizer`` (once), ``dscoder-preprocess --fim-rate R --fim-spm-rate 0 --seed S``,
``python -m megatron_dscoder.pretrain``, ``dscoder-convert to-hf``, and the HF model is measured
with ``megatron_dscoder.evaluation.generate.Generator`` on the held-out documents:

- left-to-right loss: mean next-token cross-entropy (nats/token) on plain documents (no FIM),
  each laid out as in training (EOS before and after it);
- single-line infilling exact match: one line (at least 4 non-blank characters) masked per held-out
  document; PSM prompt ``<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>``, greedy decoding
  until a newline or end of sequence; the stripped line must equal the stripped answer.

- held-out FIM loss (Bavarian et al. 2022 read FIM from it long before exact match has signal):
  one random span per held-out document (two character cut points from a hash of its name), laid
  out as in training, PSM ``<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>middle<EOS>`` and
  SPM ``<｜fim▁begin｜><｜fim▁hole｜>suffix<｜fim▁end｜>prefix middle<EOS>``; the mean cross-entropy
  over the middle's tokens (nats/token), prefix and suffix cut from the outside to fit the context;
- infilling edit similarity, partial credit beside exact match: ``1 - Levenshtein / max length``
  over the tokens of the stripped infilled line and the stripped answer, averaged over cases.

Settings: FIM 0 %, 50 % PSM, 100 % PSM. The paper's fourth setting, 50 % MSP (T5-style masked
span prediction as in CodeGen2.5), is not run: it needs per-span sentinel tokens that DeepSeek's
tokenizer does not have and a multi-span layout that the preprocessing pipeline does not build, so
any version here would be a different objective under the paper's name.

Writes ``results.json`` (per-seed values, mean, sample std), ``fim_ablation.md`` (the table) and
``fim_ablation.png`` under ``--out``, and prints the table. ``--scale gpu`` registers a ~110M
architecture for its training processes only (12 layers, hidden 768); the others use registry sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SETTINGS = {"FIM 0%": 0.0, "FIM 50% PSM": 0.5, "FIM 100% PSM": 1.0}
METRICS = {  # key: (label, scale for display)
    "l2r_loss": ("held-out L2R loss (nats/token)", 1.0),
    "fim_loss_psm": ("held-out FIM loss, PSM (nats/token)", 1.0),
    "fim_loss_spm": ("held-out FIM loss, SPM (nats/token)", 1.0),
    "infill_em": ("single-line infilling EM (%)", 100.0),
    "infill_edit_sim": ("infilling edit similarity (%)", 100.0),
}


@dataclass(frozen=True)
class Scale:
    model: str
    vocab: int
    seq_length: int
    global_batch_size: int
    train_iters: int
    lr: float
    corpus_chars: float
    heldout_files: int
    eval_docs: int
    seeds: tuple[int, ...] = (1234, 1235)
    workers: int = 2
    arch: dict | None = None  # a registered-on-the-fly architecture (gpu scale)


SCALES = {
    "smoke": Scale("debug", 512, 128, 4, 3, 3e-3, 1.5e5, 4, 6, workers=1),
    "cpu": Scale("debug-4k", 2048, 256, 8, 110, 3e-3, 3e6, 40, 120),
    "gpu": Scale(
        "fim-110m", 16384, 1024, 64, 4000, 6e-4, 6e8, 400, 1000,
        arch=dict(num_layers=12, hidden_size=768, ffn_hidden_size=2048, num_attention_heads=12,
                  num_query_groups=12, max_position_embeddings=1024, init_method_std=0.02),
    ),
}  # fmt: skip

# Runs the trainer with one extra registry size (the gpu scale's), then the real entry point.
_LAUNCH = """
import sys
from megatron_dscoder.config import recipes
from megatron_dscoder.model import registry
name, arch, size = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3])
registry.MODELS[name] = registry.ModelArch(**arch)
recipes.SIZES[name] = recipes.SizeDefaults(**size)
from megatron_dscoder.training import train
sys.exit(train.cli(sys.argv[4:]))
"""


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


def run_tool(main, argv: list[str]) -> None:
    status = main(argv)
    if status:
        raise SystemExit(f"failed ({status}): {' '.join(argv)}")


def train(scale: Scale, argv: list[str], log: Path) -> None:
    """One training run in its own process (the real entry point), its log kept in ``log``."""
    if scale.arch is None:
        cmd = [sys.executable, "-m", "megatron_dscoder.pretrain", "--model", scale.model, *argv]
    else:
        size = dict(lr=scale.lr, global_batch_size=scale.global_batch_size, lr_warmup_iters=0)
        cmd = [sys.executable, "-c", _LAUNCH, scale.model, repr(scale.arch), repr(size)]
        cmd += ["--model", scale.model, *argv]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}); see {log}")


def edit_similarity(got: list[int], want: list[int]) -> float:
    """``1 - Levenshtein(got, want) / max(len)`` over token ids (1.0 for two empty lines)."""
    if not got and not want:
        return 1.0
    row = list(range(len(want) + 1))
    for i, g in enumerate(got, start=1):
        prev, row[0] = row[0], i
        for j, w in enumerate(want, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (g != w))
    return 1.0 - row[-1] / max(len(got), len(want))


def _span_nll(model, context: list[int], middle: list[int], eos: int) -> tuple[float, int]:
    """Summed cross-entropy of ``middle`` after ``context`` (its EOS not counted), token count."""
    import torch

    ids = [*context, *middle, eos]
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].float().cpu()
    first = len(context)
    pred = logits[first - 1 : first - 1 + len(middle)]  # [len(middle), vocab]
    nll = torch.nn.functional.cross_entropy(pred, torch.tensor(middle), reduction="sum")
    return float(nll), len(middle)


def evaluate(hf_dir: Path, heldout: list[dict], seq_length: int) -> dict:
    """Left-to-right loss, FIM loss (PSM, SPM) on held-out documents, single-line infilling
    exact match and edit similarity."""
    import torch

    from megatron_dscoder.evaluation.generate import Generator
    from megatron_dscoder.preprocess.records import language_of, with_path_comment

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = Generator(hf_dir, add_bos=False, device=device)
    eos, nll, count, hits, cases, sim = gen.ids.eos, 0.0, 0, 0, 0, 0.0
    begin, hole, end = gen.ids.fim_begin, gen.ids.fim_hole, gen.ids.fim_end
    fim = {"psm": [0.0, 0], "spm": [0.0, 0]}
    budget = seq_length // 2 - 4
    for doc in heldout:
        text = with_path_comment(language_of("", doc["path"]), doc["path"], doc["text"])
        ids = ([eos, *gen.encode(text), eos])[:seq_length]
        with torch.no_grad():
            logits = gen.model(torch.tensor([ids], device=device)).logits[0, :-1].float().cpu()
        target = torch.tensor(ids[1:])
        nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        count += len(ids) - 1
        cut = sorted(_h(f"{doc['path']}@{doc['i']}#{k}") % (len(text) + 1) for k in (0, 1))
        pre, mid, suf = (
            gen.encode(t) for t in (text[: cut[0]], text[cut[0] : cut[1]], text[cut[1] :])
        )
        mid = mid[: seq_length // 2]
        room = seq_length - len(mid) - 5  # the sentinels and the two EOS
        keep_suf = min(len(suf), max(room // 2, room - len(pre)))
        pre, suf = pre[len(pre) - min(len(pre), room - keep_suf) :], suf[:keep_suf]
        if mid:  # the same (truncated) prefix, suffix and middle in both layouts
            for layout, context in (
                ("psm", [eos, begin, *pre, hole, *suf, end]),
                ("spm", [eos, begin, hole, *suf, end, *pre]),
            ):
                total, n = _span_nll(gen.model, context, mid, eos)
                fim[layout][0] += total
                fim[layout][1] += n
        lines = text.splitlines(keepends=True)
        usable = [i for i, line in enumerate(lines) if len(line.strip()) >= 4]
        if not usable:
            continue
        k = usable[_h(f"{doc['path']}@{doc['i']}") % len(usable)]
        prefix, answer = "".join(lines[:k]), lines[k].rstrip("\n")
        suffix = "\n" + "".join(lines[k + 1 :]) if lines[k].endswith("\n") else ""
        prefix = gen.decode(gen.encode(prefix)[-budget:])
        suffix = gen.decode(gen.encode(suffix)[:budget])
        got = gen.infill(prefix, suffix, max_new_tokens=48, stop=("\n",))
        hits += got.strip() == answer.strip()
        sim += edit_similarity(gen.encode(got.strip()), gen.encode(answer.strip()))
        cases += 1
    return {
        "l2r_loss": nll / max(count, 1),
        "fim_loss_psm": fim["psm"][0] / max(fim["psm"][1], 1),
        "fim_loss_spm": fim["spm"][0] / max(fim["spm"][1], 1),
        "fim_tokens": fim["psm"][1],
        "infill_em": hits / max(cases, 1),
        "infill_edit_sim": sim / max(cases, 1),
        "infill_cases": cases,
    }


def summarize(runs: list[dict]) -> dict:
    out = {}
    for name in SETTINGS:
        vals = [r for r in runs if r["setting"] == name]
        out[name] = {}
        for key in METRICS:
            xs = [r[key] for r in vals]
            std = statistics.stdev(xs) if len(xs) > 1 else 0.0
            out[name][key] = {"mean": statistics.fmean(xs), "std": std, "values": xs}
    return out


def table(summary: dict, seeds: int) -> str:
    rows = [
        "| setting | " + " | ".join(label for label, _ in METRICS.values()) + " | seeds |",
        "|---|" + "---|" * len(METRICS) + "---|",
    ]
    for name, s in summary.items():
        cells = []
        for key, (_, k) in METRICS.items():
            m, sd = k * s[key]["mean"], k * s[key]["std"]
            cells.append(f"{m:.1f} ± {sd:.1f}" if k != 1.0 else f"{m:.4f} ± {sd:.4f}")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(rows)


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, (key, (label, k)) in zip(axes, METRICS.items(), strict=True):
        means = [k * summary[n][key]["mean"] for n in names]
        stds = [k * summary[n][key]["std"] for n in names]
        ax.bar(names, means, yerr=stds, capsize=4, color=["#888", "#4a7", "#47a"])
        for i, n in enumerate(names):
            ax.plot(
                [i] * len(summary[n][key]["values"]),
                [k * v for v in summary[n][key]["values"]],
                "k.",
            )
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        if k == 1.0:  # losses: zoom on the differences
            lo, hi = min(means) - 2 * max(stds) - 0.02, max(means) + 2 * max(stds) + 0.02
            ax.set_ylim(lo, hi)
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
    args = p.parse_args()
    scale = SCALES[args.scale]
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(args.seeds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(scale.workers))
    from megatron_dscoder.convert.cli import main as convert
    from megatron_dscoder.preprocess.cli import main as preprocess
    from megatron_dscoder.preprocess.tokenizer.cli import main as train_tokenizer

    started = time.monotonic()
    corpus, heldout = build_corpus(scale, out)
    tok = out / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        run_tool(train_tokenizer, ["--input", str(corpus), "--output", str(tok),
                                   "--vocab-size", str(scale.vocab)])  # fmt: skip
    timings, runs = {"corpus_and_tokenizer_s": time.monotonic() - started}, []
    for seed in scale.seeds:
        for name, rate in SETTINGS.items():
            t0, tag = time.monotonic(), f"fim{int(rate * 100)}_s{seed}"
            run_tool(preprocess, [
                "--input", str(corpus), "--tokenizer-model", str(tok),
                "--output-prefix", str(out / "data" / tag), "--workers", str(scale.workers),
                "--fim-rate", str(rate), "--fim-spm-rate", "0", "--seed", str(seed),
                "--no-repo-level", "--no-quality", "--no-syntax-check", "--no-progress",
                "--stats-json", str(out / "data" / f"{tag}.json"),
            ])  # fmt: skip
            t1 = time.monotonic()
            ckpt, hf = out / "ckpt" / tag, out / "hf" / tag
            train(scale, [
                "--data-path", str(out / "data" / tag), "--tokenizer-model", str(tok),
                "--split", "100,0,0", "--seq-length", str(scale.seq_length),
                "--global-batch-size", str(scale.global_batch_size), "--micro-batch-size",
                str(min(scale.global_batch_size, 8)), "--train-iters", str(scale.train_iters),
                "--lr", str(scale.lr), "--min-lr", str(scale.lr / 10), "--lr-decay-style",
                "cosine", "--lr-warmup-iters", str(max(1, scale.train_iters // 20)),
                "--seed", str(seed), "--save", str(ckpt), "--save-interval",
                str(scale.train_iters), "--log-interval", str(max(1, scale.train_iters // 10)),
                "--data-cache-path", str(out / "cache" / tag),
            ], out / f"train_{tag}.log")  # fmt: skip
            t2 = time.monotonic()
            if not (hf / "config.json").exists():
                run_tool(convert, ["to-hf", "--load", str(ckpt), "--save", str(hf),
                                   "--tokenizer-model", str(tok)])  # fmt: skip
            result = evaluate(hf, heldout, scale.seq_length)
            t3 = time.monotonic()
            runs.append({"setting": name, "fim_rate": rate, "seed": seed, **result,
                         "preprocess_s": t1 - t0, "train_s": t2 - t1,
                         "eval_s": t3 - t2})  # fmt: skip
            print(f"{tag}: loss {result['l2r_loss']:.4f} FIM {result['fim_loss_psm']:.4f} "
                  f"EM {result['infill_em']:.3f} sim {result['infill_edit_sim']:.3f} "
                  f"({t3 - t0:.0f}s)", flush=True)  # fmt: skip
    summary = summarize(runs)
    tokens = scale.train_iters * scale.global_batch_size * scale.seq_length
    timings["total_s"] = time.monotonic() - started
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
    plot(summary, out / "fim_ablation.png", title)
    print(text)
    print(f"total {timings['total_s']:.0f}s; wrote {out}/results.json, fim_ablation.md/.png")
    return 0 if all(math.isfinite(r[key]) for r in runs for key in METRICS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
