"""Bytes one decoder layer keeps for backward, measured, beside the planner's prediction.

    python benchmarks/bench_activations.py                       # CPU: unfused and sdpa
    python benchmarks/bench_activations.py --device cuda --json activations.json
    python benchmarks/bench_activations.py --recompute none selective:mlp,layernorm full
    torchrun --nproc-per-node 2 benchmarks/bench_activations.py --tensor-model-parallel-size 2 \
        --sequence-parallel                                      # per rank, TP=2 + SP

Each case builds the project's model (``model/build.py``: megatron-core's ``GPTModel`` with the
local or TE spec) with one and with two decoder layers, runs the decoder block's forward under
``torch.autograd.graph.saved_tensors_hooks``, and counts the unique storages autograd keeps (a
view counts its whole base once; parameters, the RoPE table and megatron-core's cached causal
mask are shared by every layer, so the two-layer minus the one-layer figure leaves them out).
That difference, per token, is set beside ``training/activations.py``'s ``layer_bytes`` for the
same build. Storages are sized after the forward, so megatron-core's discarded checkpoint
outputs (``layernorm`` recompute) count as freed. Cases: every attention backend available here
(CPU: unfused, sdpa; CUDA also flash and transformer_engine when importable) x recompute mode x
dtype. ``full`` keeps one input per layer; the planner adds one replayed layer per stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

from megatron_dscoder.model.attention import BackendUnavailableError, resolve_backend
from megatron_dscoder.model.registry import ModelArch
from megatron_dscoder.training.activations import (
    checkpointed_layer_bytes,
    layer_bytes,
    layer_impl,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", default=None, help="write every case as JSON to this path")
    p.add_argument("--hidden-size", type=positive, default=512)
    p.add_argument("--ffn-hidden-size", type=positive, default=1376)
    p.add_argument("--num-attention-heads", type=positive, default=4)
    p.add_argument("--num-query-groups", type=positive, default=4)
    p.add_argument("--seq-length", type=positive, default=512)
    p.add_argument("--micro-batch-size", type=positive, default=2)
    p.add_argument(
        "--backends", nargs="+", default=["unfused", "sdpa", "flash", "transformer_engine"]
    )
    p.add_argument(
        "--recompute",
        nargs="+",
        default=["none", "selective", "full"],
        help="none, selective[:MODULES] (comma-separated megatron-core recompute modules), full",
    )
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    p.add_argument(
        "--tensor-model-parallel-size",
        type=positive,
        default=1,
        help="TP size (run under torchrun with as many processes); figures are rank 0's",
    )
    p.add_argument("--sequence-parallel", action="store_true")
    p.add_argument(
        "--swiglu-fusion",
        nargs="+",
        choices=("off", "on"),
        default=["off"],
        help="megatron-core's bias_activation_fusion (torch.compile; compiles on first use)",
    )
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != args.tensor_model_parallel_size:
        p.error(
            f"--tensor-model-parallel-size {args.tensor_model_parallel_size} needs as many "
            f"processes (torchrun --nproc-per-node); running {world}"
        )
    if args.sequence_parallel and args.tensor_model_parallel_size == 1:
        p.error("--sequence-parallel needs --tensor-model-parallel-size > 1")
    for mode in args.recompute:
        if mode.split(":")[0] not in ("none", "selective", "full"):
            p.error(f"--recompute {mode}: none, selective[:MODULES] or full")
    try:
        ModelArch(**arch_fields(args, 1))
    except ValueError as err:
        p.error(str(err))
    return args


def arch_fields(args: argparse.Namespace, num_layers: int) -> dict:
    return {
        "num_layers": num_layers,
        "hidden_size": args.hidden_size,
        "ffn_hidden_size": args.ffn_hidden_size,
        "num_attention_heads": args.num_attention_heads,
        "num_query_groups": args.num_query_groups,
        "vocab_size": 256,
        "max_position_embeddings": max(4096, args.seq_length),
    }


def recompute_kwargs(mode: str) -> dict:
    """megatron-core ``TransformerConfig`` fields of a ``--recompute`` value."""
    name, _, modules = mode.partition(":")
    if name == "full":
        return {"recompute_granularity": "full", "recompute_method": "uniform",
                "recompute_num_layers": 1}  # fmt: skip
    if name == "selective":
        kw = {"recompute_granularity": "selective"}
        if modules:
            kw["recompute_modules"] = modules.split(",")
        return kw
    return {}


def saved_bytes(model, seq: int, mbs: int, device: str) -> float:
    """Bytes of unique non-parameter storages the decoder keeps after one forward."""
    decoder = model.decoder
    rope = model.rotary_pos_emb(seq)  # [s, 1, 1, d] fp32, shared by every layer
    h = model.config.hidden_size
    tokens = (
        seq // model.config.tensor_model_parallel_size if model.config.sequence_parallel else seq
    )
    x = torch.randn(tokens, mbs, h, dtype=model.config.params_dtype, device=device)
    x.requires_grad_()  # [s (/ TP under SP), b, h]
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip.add(rope.untyped_storage().data_ptr())
    kept: dict[int, torch.Tensor] = {}
    recording = [True]  # the final norm belongs to the model, not to a layer
    hooks = [
        decoder.final_layernorm.register_forward_pre_hook(lambda *_: recording.__setitem__(0, 0)),
        decoder.final_layernorm.register_forward_hook(lambda *_: recording.__setitem__(0, 1)),
    ]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if recording[0]:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in skip:
                kept.setdefault(ptr, t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = decoder(x, attention_mask=None, rotary_pos_emb=rope)
    total = sum(t.untyped_storage().nbytes() for t in kept.values())
    del out
    for handle in hooks:
        handle.remove()
    return float(total)


def measure_case(args, backend: str, dtype: str, mode: str, swiglu: str) -> dict:
    """Measured and planned bytes per token per layer for one case."""
    from megatron_dscoder.model.build import build_model, transformer_config

    seq, mbs, cuda = args.seq_length, args.micro_batch_size, args.device == "cuda"
    totals, config = [], None
    for layers in (1, 2):
        arch = ModelArch(**arch_fields(args, layers))
        config = transformer_config(
            arch,
            params_dtype=DTYPES[dtype],
            tensor_model_parallel_size=args.tensor_model_parallel_size,
            sequence_parallel=args.sequence_parallel,
            bias_activation_fusion=swiglu == "on",
            **recompute_kwargs(mode),
        )
        torch.manual_seed(0)
        model = build_model(arch, config, backend).to(args.device)
        model.train()
        totals.append(saved_bytes(model, seq, mbs, args.device))
        del model
    measured = (totals[1] - totals[0]) / (seq * mbs)
    impl = layer_impl(config, backend, cuda)
    if impl.recompute_granularity == "full":
        planned_parts = {
            "layer input": checkpointed_layer_bytes(ModelArch(**arch_fields(args, 1)), impl)
        }
    else:
        planned_parts = layer_bytes(ModelArch(**arch_fields(args, 1)), impl, seq, mbs)
    planned = sum(planned_parts.values())
    return {
        "device": args.device,
        "backend": backend,
        "dtype": dtype,
        "recompute": mode,
        "swiglu_fusion": swiglu,
        "measured_bytes_per_token_per_layer": measured,
        "planned_bytes_per_token_per_layer": planned,
        "ratio_planned_to_measured": planned / measured,
        "planned_parts": planned_parts,
        "measured_over_h": measured / args.hidden_size,
        "modelled_only_on_gpu": cuda,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from megatron_dscoder.config.run import ParallelConfig
    from megatron_dscoder.parallel import distributed

    tp = args.tensor_model_parallel_size
    distributed.initialize(
        ParallelConfig(
            tensor_model_parallel_size=tp, sequence_parallel=args.sequence_parallel, world_size=tp
        ),
        seed=0,
    )
    if torch.distributed.get_rank() != 0:  # every rank measures; rank 0 reports
        sys.stdout = open(os.devnull, "w")
        args.json = None
    results, skipped = [], []
    shape = (
        f"h={args.hidden_size} f={args.ffn_hidden_size} heads={args.num_attention_heads}/"
        f"{args.num_query_groups} s={args.seq_length} b={args.micro_batch_size} TP={tp}"
        f"{' + SP' if args.sequence_parallel else ''}"
    )
    sys.stdout.write(f"device {args.device}, {shape}: bytes per token per layer\n")
    sys.stdout.write(
        f"{'backend':>18} {'dtype':>5} {'recompute':>24} {'swiglu':>6} "
        f"{'measured':>9} {'planned':>9} {'x h':>6} {'plan/meas':>9}\n"
    )
    try:
        for backend in args.backends:
            try:
                resolved = resolve_backend(backend)
            except BackendUnavailableError as err:
                skipped.append({"backend": backend, "reason": str(err)})
                sys.stdout.write(f"{backend:>18} skipped: {err}\n")
                continue
            for dtype in args.dtypes:
                for mode in args.recompute:
                    for swiglu in args.swiglu_fusion:
                        r = measure_case(args, resolved, dtype, mode, swiglu)
                        results.append(r)
                        sys.stdout.write(
                            f"{backend:>18} {dtype:>5} {mode:>24} {swiglu:>6} "
                            f"{r['measured_bytes_per_token_per_layer']:>9.0f} "
                            f"{r['planned_bytes_per_token_per_layer']:>9.0f} "
                            f"{r['measured_over_h']:>6.1f} "
                            f"{r['ratio_planned_to_measured']:>9.3f}\n"
                        )
                        sys.stdout.flush()
    finally:
        distributed.destroy()
    worst = max((abs(r["ratio_planned_to_measured"] - 1) for r in results), default=0.0)
    sys.stdout.write(f"largest planner deviation: {100 * worst:.1f} % over {len(results)} cases\n")
    if args.json:
        report = {
            "shape": dataclasses.asdict(ModelArch(**arch_fields(args, 1))),
            "seq_length": args.seq_length,
            "micro_batch_size": args.micro_batch_size,
            "torch": torch.__version__,
            "cases": results,
            "skipped": skipped,
        }
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
