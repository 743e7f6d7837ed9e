"""Step-for-step parity of the project's trainer with an independent plain-PyTorch trainer.

    python benchmarks/reference_parity.py --scale smoke --out out/parity_smoke # make test: 20 steps
    python benchmarks/reference_parity.py --scale full --out docs  # 300 steps, 3 layouts, minutes

One set of initial weights: a random transformers ``LlamaForCausalLM`` (the debug model's shape:
4 layers, hidden 64, GQA 4 heads in 2 groups, vocabulary 512) saved with ``save_pretrained`` and
imported with ``dscoder-convert from-hf``. One corpus: standard-library Python, tokenized by a
512-token byte-level BPE with DeepSeek-Coder's special tokens, written as a Megatron ``.bin/.idx``.

- ours: ``python -m megatron_dscoder.pretrain --load IMPORTED --finetune --data-path ...`` (the
  real entry point; torchrun over gloo for TP=2 with sequence parallelism and for PP=2), fp32,
  per-iteration ``lm_loss`` and ``grad_norm`` from ``--metrics-jsonl``;
- reference: ``benchmarks/reference_trainer.py`` (transformers + ``torch.optim.AdamW``, written from
  the definitions; its docstring lists every choice it matches) on the same HF weights and on our
  batches in our order. The package is used here only to read those batches: the run's flags are
  parsed as the trainer parses them and its datasets and micro-batch sampler are read through.

Both get AdamW (β 0.9/0.95, ε 1e-8, weight decay 0.1 on matrices only), clipping at 1.0, and
warm-up then DeepSeek's three-stage step schedule. The reference is also run once with decay on
every parameter (norm gains included), the slip it was built to catch, as a measure of what a
gap of that kind looks like. Writes ``reference_parity.json`` (curves, per-step relative gaps,
their maxima, timings, the command) and ``reference_parity.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_trainer  # noqa: E402 - this folder's module

VOCAB = 512  # a multiple of 256: no padded rows at TP=1 or TP=2, so both softmaxes match HF's


@dataclass(frozen=True)
class Scale:
    steps: int
    warmup: int
    seq_length: int
    global_batch_size: int
    micro_batch_size: int
    corpus_chars: int
    layouts: tuple[str, ...]
    lr: float = 1e-3
    weight_decay: float = 0.1
    clip_grad: float = 1.0
    seed: int = 1234


SCALES = {
    "smoke": Scale(20, 3, 64, 4, 2, 60_000, ("tp1",)),
    "full": Scale(300, 30, 64, 4, 2, 300_000, ("tp1", "tp2-sp", "pp2")),
}
LAYOUTS = {  # name: (processes, extra flags)
    "tp1": (1, []),
    "tp2-sp": (2, ["--tensor-model-parallel-size", "2", "--sequence-parallel"]),
    "pp2": (2, ["--pipeline-model-parallel-size", "2"]),
}


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, float, Path]:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    return proc, time.time(), log


def _wait(started: tuple[subprocess.Popen, float, Path]) -> float:
    """Wait for the process; returns its wall time, launch to its last output (the runs are
    waited for after the reference, so the time of the wait would overstate it)."""
    proc, start, log = started
    if proc.wait():
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(proc.args)}; see {log}")
    return log.stat().st_mtime - start


def _run(cmd: list[str], log: Path) -> float:
    return _wait(_start(cmd, log))


def corpus_texts(chars: int) -> list[str]:
    """Standard-library modules (sorted by name) in 40-line documents, about ``chars`` in all."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(root.glob("*.py")):
        lines = path.read_text("utf-8", errors="replace").splitlines(keepends=True)
        for i in range(0, len(lines), 40):
            docs.append("".join(lines[i : i + 40]))
            total += len(docs[-1])
        if total >= chars:
            break
    return docs


def make_tokenizer(path: Path, texts: list[str]) -> Path:
    """A byte-level BPE of exactly :data:`VOCAB` tokens with DeepSeek-Coder's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from megatron_dscoder.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.add_tokens([f"<extra_{i}>" for i in range(VOCAB - tok.get_vocab_size())])
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False}
    config.update(bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=16384)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def write_corpus(prefix: Path, tok_dir: Path, texts: list[str]) -> Path:
    """Tokenized documents, EOS after each, through megatron-core's IndexedDatasetBuilder."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tokenizers import Tokenizer

    from megatron_dscoder.tokenizer import EOS

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    eos = tok.token_to_id(EOS)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=__import__("numpy").uint16)
    for enc in tok.encode_batch(texts):
        builder.add_item(torch.tensor([*enc.ids, eos], dtype=torch.int64))
        builder.end_document()
    builder.finalize(str(prefix) + ".idx")
    return prefix


def make_hf_model(path: Path, tok_dir: Path, seed: int) -> Path:
    """A random ``LlamaForCausalLM`` of the debug model's shape, with the tokenizer beside it."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        initializer_range=0.02,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(path))
    for f in tok_dir.iterdir():
        shutil.copy2(f, path / f.name)
    return path


def trainer_flags(scale: Scale, work: Path) -> list[str]:
    """The pretraining flags shared by every layout (and parsed again to read the batches)."""
    flags = {
        "--load": work / "megatron",
        "--data-path": work / "data" / "code",
        "--split": "100,0,0",
        "--tokenizer-model": work / "tokenizer",
        "--data-cache-path": work / "cache",
        "--train-iters": scale.steps,
        "--global-batch-size": scale.global_batch_size,
        "--micro-batch-size": scale.micro_batch_size,
        "--seq-length": scale.seq_length,
        "--lr": scale.lr,
        "--min-lr": 0.0,
        "--lr-warmup-iters": scale.warmup,
        "--lr-decay-style": "three-stage",
        "--weight-decay": scale.weight_decay,
        "--adam-beta1": 0.9,
        "--adam-beta2": 0.95,
        "--adam-eps": 1e-8,
        "--clip-grad": scale.clip_grad,
        "--seed": scale.seed,
        "--attention-backend": "sdpa",
        "--log-interval": 1,
    }
    return ["--finetune", "--no-bf16", *[str(x) for kv in flags.items() for x in kv]]


def start_ours(layout: str, flags: list[str], work: Path) -> tuple:
    """Launch our trainer in ``layout`` (the layouts run side by side: on a shared machine the
    wall time is then the slowest one's, not the sum)."""
    nproc, extra = LAYOUTS[layout]
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
        launcher.append(f"--master-port={free_port()}")
    cmd = [*launcher, "-m", "megatron_dscoder.pretrain", *flags, *extra]
    return _start([*cmd, "--metrics-jsonl", str(work / f"{layout}.jsonl")], work / f"{layout}.log")


def finish_ours(layout: str, started: tuple, work: Path) -> dict:
    seconds = _wait(started)
    metrics = work / f"{layout}.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    records = [r for r in records if "lm_loss" in r]
    assert [r["iteration"] for r in records] == list(range(1, len(records) + 1)), layout
    return {
        "lm_loss": [r["lm_loss"] for r in records],
        "grad_norm": [r["grad_norm"] for r in records],
        "lr": [r["lr"] for r in records],
        "seconds": round(seconds, 1),
    }


def our_batches(flags: list[str], scale: Scale):
    """The global batches our trainer consumes, in its order (read through the package)."""
    from megatron_dscoder.config import cli
    from megatron_dscoder.datasets.gpt import MicroBatchSampler, build_train_valid, loader
    from megatron_dscoder.training.train import latest_checkpoint_metadata

    _, run = cli.parse(flags, 1, latest_checkpoint_metadata)  # --load names the model
    dataset, _ = build_train_valid(run, with_valid=False)
    sampler = MicroBatchSampler(
        total_samples=scale.steps * scale.global_batch_size,
        consumed_samples=0,
        micro_batch_size=scale.micro_batch_size,
        dp_rank=0,
        dp_size=1,
    )
    micro = loader(dataset, sampler, 0)
    per_step = scale.global_batch_size // scale.micro_batch_size
    for _ in range(scale.steps):
        yield [next(micro) for _ in range(per_step)]


def train_reference(scale: Scale, flags: list[str], hf_dir: Path, decay_norms: bool) -> dict:
    cfg = reference_trainer.ReferenceConfig(
        lr=scale.lr,
        warmup_iters=scale.warmup,
        train_iters=scale.steps,
        weight_decay=scale.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_eps=1e-8,
        clip_grad=scale.clip_grad,
        decay_norms=decay_norms,
    )
    start = time.perf_counter()
    out = reference_trainer.train(str(hf_dir), our_batches(flags, scale), cfg)
    return {**out, "seconds": round(time.perf_counter() - start, 1)}


def gaps(ours: dict, ref: dict) -> dict:
    """Relative difference per step, and its maxima over the first 20, 100 steps and all."""
    out = {}
    for key in ("lm_loss", "grad_norm"):
        rel = [abs(a - b) / abs(b) for a, b in zip(ours[key], ref[key], strict=True)]
        out[key] = {
            "max_rel_first_20": max(rel[:20]),
            "max_rel_first_100": max(rel[:100]),
            "max_rel": max(rel),
            "rel_per_step": rel,
        }
    return out


FLOOR = 1e-9  # where an exact agreement is drawn on the log scale


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ref, steps = report["reference"], range(1, len(report["reference"]["lm_loss"]) + 1)
    for col, key in enumerate(("lm_loss", "grad_norm")):
        ax = axes[0][col]
        ax.plot(steps, ref[key], "k-", lw=2.5, alpha=0.35, label="reference (HF + AdamW)")
        for name, run in report["layouts"].items():
            ax.plot(steps, run[key], "--", lw=1, label=f"ours {name}")
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[1][col]
        for name, gap in report["gaps"].items():
            rel = [max(r, FLOOR) for r in gap[key]["rel_per_step"]]
            style = "-" if name.startswith("reference") else "."
            ax.semilogy(steps, rel, style, ms=3, lw=1, label=name)
        ax.axhline(1e-5, color="r", lw=0.8, ls=":", label="1e-5")
        ax.set_title(f"|ours - reference| / reference: {key} (0 drawn at {FLOOR:g})", fontsize=10)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=SCALES, default="smoke")
    p.add_argument("--out", type=Path, required=True, help="where the JSON and PNG go")
    p.add_argument("--work", type=Path, help="keep the intermediate files here (default: temp)")
    p.add_argument("--layouts", help=f"comma-separated subset of {', '.join(LAYOUTS)}")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    if args.layouts:
        unknown = set(args.layouts.split(",")) - set(LAYOUTS)
        if unknown:
            p.error(f"--layouts: unknown {', '.join(sorted(unknown))}")
        scale = Scale(**{**asdict(scale), "layouts": tuple(args.layouts.split(","))})
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = run(scale, work)
    report["command"] = (
        f"python benchmarks/reference_parity.py --scale {args.scale} --out {args.out}"
    )
    if args.layouts:
        report["command"] += f" --layouts {args.layouts}"
    tmp_json = args.out / "reference_parity.json.tmp"
    tmp_json.write_text(json.dumps(report, indent=1))
    os.replace(tmp_json, args.out / "reference_parity.json")
    plot(report, args.out / "reference_parity.png")
    for name, gap in report["gaps"].items():
        print(
            f"{name:>22}: max relative gap  loss {gap['lm_loss']['max_rel_first_20']:.2e} "
            f"(first 20) {gap['lm_loss']['max_rel']:.2e} (all)   grad_norm "
            f"{gap['grad_norm']['max_rel_first_20']:.2e} (first 20) "
            f"{gap['grad_norm']['max_rel']:.2e} (all)"
        )
    return 0


def run(scale: Scale, work: Path) -> dict:
    texts = corpus_texts(scale.corpus_chars)
    tok_dir = make_tokenizer(work / "tokenizer", texts)
    (work / "data").mkdir()
    write_corpus(work / "data" / "code", tok_dir, texts)
    hf_dir = make_hf_model(work / "hf", tok_dir, scale.seed)
    convert = [sys.executable, "tools/convert_checkpoint.py", "from-hf"]
    _run([*convert, "--load", str(hf_dir), "--save", str(work / "megatron")], work / "convert.log")
    flags = trainer_flags(scale, work)
    next(our_batches(flags, scale))  # megatron-core's index cache, built once before the runs
    started = {name: start_ours(name, flags, work) for name in scale.layouts}
    reference = train_reference(scale, flags, hf_dir, decay_norms=False)
    slip = train_reference(scale, flags, hf_dir, decay_norms=True)
    layouts = {name: finish_ours(name, started[name], work) for name in scale.layouts}
    report = {
        "config": {**asdict(scale), "vocab": VOCAB, "model": "debug shape, 4 layers, hidden 64"},
        "reference": reference,
        "reference_decaying_norms": slip,
        "layouts": layouts,
        "gaps": {name: gaps(run_, reference) for name, run_ in layouts.items()},
    }
    report["gaps"]["reference decaying norms"] = gaps(slip, reference)
    return report


if __name__ == "__main__":
    sys.exit(main())
