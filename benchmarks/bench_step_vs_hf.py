"""Our full training step against Hugging Face Llama + torch AdamW on identical shapes.

    python benchmarks/bench_step_vs_hf.py                          # CPU, 2 threads, ~2 minutes
    python benchmarks/bench_step_vs_hf.py --rounds 7 --steps 3 --attention-backend unfused
    python benchmarks/bench_step_vs_hf.py --seq-length 2048 --hidden-size 1024   # also on a GPU

``ours`` is one call of ``megatron_dscoder.training.step.train_step``: megatron-core's schedule,
forward and backward of our ``GPTModel`` (GQA, SwiGLU, RMSNorm, RoPE, untied embeddings), DDP
gradient buffers, grad-norm clipping and megatron-core's Adam. ``hf`` is ``LlamaForCausalLM``
(``attn_implementation="sdpa"``) with the same dimensions and vocabulary, loss from labels,
``clip_grad_norm_`` and ``torch.optim.AdamW``. Both run in this process on the same tokens;
rounds alternate (ours, hf, ours, ...) so machine noise hits both alike, and the report gives each
side's median step time and their ratio (ours / hf: below 1.0 means ours is faster).

On a CPU, megatron-core runs through the project's CPU layer (a TorchFunctionMode); the HF steps
run with that mode popped, so they pay nothing for it. On a GPU ours trains in bf16 mixed
precision and HF under ``torch.autocast(bfloat16)``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--ffn-hidden-size", type=int, default=704)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--num-query-groups", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32256)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (>= 5)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--attention-backend", default="auto")
    return p.parse_args()


def build_ours(args: argparse.Namespace):
    """Our model, DDP and optimizer as the trainer builds them; returns a step callable."""
    from megatron_dscoder.config.run import ParallelConfig, RunConfig, TrainConfig
    from megatron_dscoder.model.registry import ModelArch
    from megatron_dscoder.parallel import distributed
    from megatron_dscoder.training.build import (
        build_model_chunks,
        build_optimizer,
        build_transformer_config,
    )
    from megatron_dscoder.training.step import train_step

    arch = ModelArch(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        ffn_hidden_size=args.ffn_hidden_size,
        num_attention_heads=args.num_attention_heads,
        num_query_groups=args.num_query_groups,
        vocab_size=args.vocab_size,
        max_position_embeddings=max(4096, args.seq_length),
    )
    mbs, seq = args.micro_batch_size, args.seq_length
    run = RunConfig(
        model=None,
        arch=arch,
        parallel=ParallelConfig(),
        train=TrainConfig(
            micro_batch_size=mbs,
            global_batch_size=mbs,
            seq_length=seq,
            lr=3e-4,
            train_iters=1,
            attention_backend=args.attention_backend,
        ),
    )
    distributed.initialize(run.parallel, run.train.seed)
    model = build_model_chunks(run, build_transformer_config(run))
    optimizer = build_optimizer(run, model)
    for group in optimizer.param_groups:
        group["lr"] = run.train.lr
    tokens = torch.randint(0, args.vocab_size, (mbs, seq + 1), generator=torch.Generator())
    batch = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones(mbs, seq),
        "position_ids": torch.arange(seq).unsqueeze(0).expand(mbs, -1),
    }

    def step() -> float:
        result = train_step(
            model,
            optimizer,
            iter([batch]),
            num_microbatches=1,
            seq_length=seq,
            micro_batch_size=mbs,
        )
        return result.lm_loss

    return step, tokens, run


def build_hf(args: argparse.Namespace, tokens: torch.Tensor, run):
    """LlamaForCausalLM with SDPA on the same shapes, AdamW with the same hyper-parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.ffn_hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_attention_heads,
        num_key_value_heads=args.num_query_groups,
        max_position_embeddings=run.arch.max_position_embeddings,
        rms_norm_eps=run.arch.layernorm_epsilon,
        rope_theta=float(run.arch.rotary_base),
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").to(device)
    model.train()
    t = run.train
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=t.lr,
        betas=(t.adam_beta1, t.adam_beta2),
        eps=t.adam_eps,
        weight_decay=t.weight_decay,
    )
    ids = tokens[:, :-1].to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else contextlib.nullcontext()
    )

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        opt.step()
        return loss.item()

    return step


def without_cpu_layer():
    """A context with the CPU layer's TorchFunctionMode popped (a no-op when none is active)."""
    if torch.overrides._get_current_function_mode_stack():
        return torch.overrides._pop_mode_temporarily()
    return contextlib.nullcontext()


def timed(step, n: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per step over ``n`` steps. CPU time is what a shared machine
    cannot steal: other processes' load inflates wall time, not this process's CPU time."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def main() -> int:
    args = parse()
    ours, tokens, run = build_ours(args)
    torch.set_num_threads(args.threads)  # after initialize(), which sets its own count
    with without_cpu_layer():
        hf = build_hf(args, tokens, run)
    for _ in range(args.warmup):
        ours()
        with without_cpu_layer():
            hf()
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "hf": []}
    for _ in range(args.rounds):
        times["ours"].append(timed(ours, args.steps))
        with without_cpu_layer():
            times["hf"].append(timed(hf, args.steps))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    sys.stdout.write(
        f"device {device}, {torch.get_num_threads()} threads, attention-backend "
        f"{args.attention_backend}; h{args.hidden_size} L{args.num_layers} "
        f"heads {args.num_attention_heads}/{args.num_query_groups} seq {args.seq_length} "
        f"batch {args.micro_batch_size} vocab {args.vocab_size}\n"
    )
    for i, clock in enumerate(("wall", "cpu")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        for name in ("ours", "hf"):
            runs = " ".join(f"{1e3 * t[i]:.0f}" for t in times[name])
            sys.stdout.write(
                f"{clock:>4} {name:>4}: median {1e3 * med[name]:8.1f} ms/step   rounds [{runs}]\n"
            )
        paired = statistics.median(
            o[i] / h[i] for o, h in zip(times["ours"], times["hf"], strict=True)
        )
        sys.stdout.write(
            f"{clock:>4} ratio ours/hf: {med['ours'] / med['hf']:.3f} (of medians), "
            f"{paired:.3f} (median of per-round ratios)\n"
        )
    from megatron_dscoder.parallel import distributed

    distributed.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
