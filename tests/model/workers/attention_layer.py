"""sdpa against unfused on a one-layer model: logits and every gradient, per attention shape.

    python tests/model/workers/attention_layer.py    # prints {case: {...max relative diffs}} JSON

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
from megatron_dscoder.model.registry import MODELS, extend_context
from megatron_dscoder.model.weight_init import initialize_model

ONE_LAYER = dataclasses.replace(MODELS["debug"], num_layers=1)
CASES = {
    "gqa": (ONE_LAYER, 64),
    "mha": (dataclasses.replace(ONE_LAYER, num_query_groups=4), 64),
    "mqa": (dataclasses.replace(ONE_LAYER, num_query_groups=1), 64),
    "gqa_rope_interpolated": (extend_context(ONE_LAYER), 320),
}


def run(backend: str, arch, seq: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:  # noqa: ANN001
    model = build_model(arch, transformer_config(arch), attention_backend=backend)
    initialize_model(
        model, 5, init_method_std=0.2, num_layers=arch.num_layers, tp_rank=0, tp_size=1
    )  # a large std: attention far from uniform, so the kernels are really compared
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arch.vocab_size, (2, seq), generator=gen)
    positions = torch.arange(seq).unsqueeze(0).expand(2, -1)
    logits = model(tokens, positions, attention_mask=None)
    weights = torch.randn(logits.shape, generator=gen)
    (logits * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logits.detach(), grads, sorted(model.state_dict())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main() -> None:
    results = {}
    with one_rank_group():
        for name, (arch, seq) in CASES.items():
            ref_logits, ref_grads, ref_keys = run("unfused", arch, seq)
            logits, grads, keys = run("sdpa", arch, seq)
            results[name] = {
                "logits": rel(logits, ref_logits),
                "grads": max(rel(grads[n], ref_grads[n]) for n in ref_grads),
                "same_keys": keys == ref_keys,
                "grad_names": len(grads),
            }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
