"""sdpa against unfused on a one-layer model: logits and every gradient, per attention shape.

    python tests/model/workers/attention_layer.py [BACKEND]   # {case: {max relative diffs}} JSON

BACKEND defaults to sdpa; on a GPU both models run in bf16 (``flash`` needs it).

Both models get the same layout-independent initialisation, so any difference is the attention
kernel's. Cases: GQA (4 heads / 2 groups), MHA, MQA, and GQA with the 16K stage's interpolated
RoPE (base 1e5, x4) at a length beyond the 4K stage's positions.
"""

import dataclasses
import json
import sys

import torch

from megatron_dscoder.convert.megatron import one_rank_group
from megatron_dscoder.model.build import build_model, transformer_config
from megatron_dscoder.model.registry import MODELS, with_long_context
from megatron_dscoder.model.weight_init import initialize_model

ONE_LAYER = dataclasses.replace(MODELS["debug"], num_layers=1)
CASES = {
    "gqa": (ONE_LAYER, 64),
    "mha": (dataclasses.replace(ONE_LAYER, num_query_groups=4), 64),
    "mqa": (dataclasses.replace(ONE_LAYER, num_query_groups=1), 64),
    "gqa_rope_interpolated": (with_long_context(ONE_LAYER, 4, 100000), 320),
}


CUDA = torch.cuda.is_available()
DTYPE = torch.bfloat16 if CUDA else torch.float32


def run(backend: str, arch, seq: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    config = transformer_config(arch, params_dtype=DTYPE)
    model = build_model(arch, config, attention_backend=backend)
    initialize_model(
        model, 5, init_method_std=0.2, num_layers=arch.num_layers, tp_rank=0, tp_size=1
    )  # a large std: attention far from uniform, so the kernels are really compared
    device = "cuda" if CUDA else "cpu"
    model.to(device)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arch.vocab_size, (2, seq), generator=gen).to(device)
    positions = torch.arange(seq, device=device).unsqueeze(0).expand(2, -1)
    logits = model(tokens, positions, attention_mask=None).float()
    weights = torch.randn(logits.shape, generator=gen).to(device)
    (logits * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logits.detach(), grads, sorted(model.state_dict())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "sdpa"
    results = {}
    with one_rank_group():
        for name, (arch, seq) in CASES.items():
            ref_logits, ref_grads, ref_keys = run("unfused", arch, seq)
            logits, grads, keys = run(backend, arch, seq)
            results[name] = {
                "logits": rel(logits, ref_logits),
                "grads": max(rel(grads[n], ref_grads[n]) for n in ref_grads),
                "same_keys": keys == ref_keys,
                "grad_names": len(grads),
            }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
