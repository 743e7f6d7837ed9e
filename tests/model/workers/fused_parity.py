"""The lean local spec against the paths it replaces; prints {check: max relative diff} JSON.

    python tests/model/workers/fused_parity.py

* RMSNorm (torch's ``rms_norm`` in the activation dtype) against the previous implementation
  (an fp32 copy of x and of the weight, cast back), fp32 and bf16, output and both gradients;
* a two-layer sdpa model with RoPE compiled (``LeanSelfAttention`` + ``compiled_rope``) and
  megatron-core's compiled SwiGLU (``bias_activation_fusion``) against the plain model, MHA
  (megatron-core's unfused RoPE and SwiGLU): logits and every gradient, fp32;
* the same with the uncompiled :func:`rope` (the interception alone), fp32 and bf16;
* the SDPA kernel line in the log.
"""

import dataclasses
import json
import logging

import torch
import torch.nn.functional as F

from megatron_dscoder.convert.megatron import one_rank_group
from megatron_dscoder.model.build import RMSNorm, build_model, transformer_config
from megatron_dscoder.model.fused import compiled_rope, rope
from megatron_dscoder.model.registry import MODELS
from megatron_dscoder.model.weight_init import initialize_model

ARCH = dataclasses.replace(MODELS["debug"], num_layers=2)
MHA = dataclasses.replace(ARCH, num_query_groups=ARCH.num_attention_heads)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def norm_diffs(dtype: torch.dtype) -> float:
    norm = RMSNorm(transformer_config(ARCH, params_dtype=dtype), ARCH.hidden_size)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(ARCH.hidden_size) + 0.5)
    x = 3 * torch.randn(16, 2, ARCH.hidden_size, generator=torch.Generator().manual_seed(1))
    x = x.to(dtype).requires_grad_()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)

    def previous(x, w):
        return F.rms_norm(x.float(), norm.normalized_shape, w.float(), norm.eps).to(x.dtype)

    out = {}
    for name, fn in (("new", norm), ("old", lambda t: previous(t, norm.weight))):
        x.grad = norm.weight.grad = None
        y = fn(x)
        y.backward(g)
        out[name] = (y.detach(), x.grad.clone(), norm.weight.grad.clone())
    return max(rel(a, b) for a, b in zip(out["new"], out["old"], strict=True))


def model_run(dtype: torch.dtype, rope_fn=None, swiglu_fused: bool = False, arch=ARCH):
    config = transformer_config(arch, params_dtype=dtype, bias_activation_fusion=swiglu_fused)
    model = build_model(arch, config, attention_backend="sdpa")
    initialize_model(
        model, 3, init_method_std=0.2, num_layers=arch.num_layers, tp_rank=0, tp_size=1
    )
    if rope_fn is not None:
        for layer in model.decoder.layers:
            layer.self_attention.rope_fn = rope_fn
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arch.vocab_size, (2, 48), generator=gen)
    positions = torch.arange(48).unsqueeze(0).expand(2, -1)
    logits = model(tokens, positions, attention_mask=None).float()
    (logits * torch.randn(logits.shape, generator=gen)).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def model_diffs(dtype: torch.dtype, **kwargs: object) -> dict[str, float]:
    ref_logits, ref_grads = model_run(dtype, arch=kwargs.get("arch", ARCH))
    logits, grads = model_run(dtype, **kwargs)
    worst = max(rel(grads[n], ref_grads[n]) for n in ref_grads)
    return {"logits": rel(logits, ref_logits), "grads": worst, "grad_names": len(grads)}


def main() -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("megatron_dscoder.model.fused").addHandler(handler)
    logging.getLogger("megatron_dscoder.model.fused").setLevel(logging.INFO)
    result = {"norm_fp32": norm_diffs(torch.float32), "norm_bf16": norm_diffs(torch.bfloat16)}
    with one_rank_group():
        calls = []

        def counted(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
            calls.append(t.shape[2])  # heads of q, groups of k
            return rope(t, freqs)

        result["rope_plain_fp32"] = model_diffs(torch.float32, rope_fn=counted)
        result["rope_calls"] = calls
        result["rope_plain_bf16"] = model_diffs(torch.bfloat16, rope_fn=rope)
        # MHA here: q and k share a shape, so RoPE compiles once (GQA is covered above).
        result["compiled_fp32"] = model_diffs(
            torch.float32, rope_fn=compiled_rope(), swiglu_fused=True, arch=MHA
        )
    result["sdpa_log"] = [r for r in records if r.startswith("SDPA on")]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
