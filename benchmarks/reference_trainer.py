"""An independent plain-PyTorch pretraining loop: the yardstick for the project's trainer.

Written from the published definitions, with no import from ``megatron_dscoder``: transformers'
``LlamaForCausalLM`` (the model DeepSeek-Coder's released checkpoints load into) and
``torch.optim.AdamW``. It consumes global batches given to it as lists of micro-batches (the
caller reads them in the trainer's order) and returns the loss and gradient norm of every step.

Every choice it has to make so that the two trainers compute the same update, and why:

- **Precision**: fp32 weights, activations, gradients and optimizer state, on CPU.
- **Loss**: next-token cross-entropy over the whole vocabulary (its rows as the checkpoint has
  them), per-token mean over the *global* batch: each micro-batch contributes the sum of its
  unmasked token losses, and the gradient is divided once by the global count of unmasked tokens
  (Megatron-LM with ``calculate_per_token_loss``; for full, unmasked pretraining sequences this
  equals the mean of per-micro-batch means that Megatron-LM uses by default). The batch already
  holds ``labels`` shifted by one, so the logits of position ``t`` are scored against
  ``labels[t]`` (the model is not given ``labels=``, which would shift them again).
- **Attention**: causal over each whole sequence (documents packed, no reset at EOS), positions
  ``0..s-1`` as the batch's ``position_ids``; torch's SDPA kernel.
- **Gradient norm and clipping**: the L2 norm over all parameters (accumulated in float64),
  reported *before* clipping; when ``clip_grad > 0`` gradients are scaled by
  ``clip_grad / (norm + 1e-6)`` if that is below 1 (Megatron-LM's and ``clip_grad_norm_``'s rule).
- **AdamW**: decoupled weight decay (Loshchilov & Hutter), ``p <- p (1 - lr wd)`` then the Adam
  step with bias correction; β1, β2, ε as given. Decay applies to exactly the parameters
  Megatron-LM decays: those with two or more dimensions that are not biases (embedding, output
  layer, attention and MLP matrices), never the RMSNorm gains (1-D).
- **Learning rate** of step ``i`` (1-based, the LR the i-th update uses): linear warm-up from 0,
  ``peak x i / warmup`` for ``i <= warmup``; then DeepSeek LLM's multi-step schedule that
  DeepSeek-Coder uses: the peak while ``i / train_iters <= 0.8``, ``peak x sqrt(0.1)`` while
  ``<= 0.9``, ``peak x 0.1`` after (31.6 % and 10 % of the maximum).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig:
    """The optimiser settings both trainers are given."""

    lr: float
    warmup_iters: int
    train_iters: int
    weight_decay: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    clip_grad: float
    decay_norms: bool = False
    """Decay every parameter, norm gains included (the slip this trainer was built to catch)."""

    def lr_at(self, step: int) -> float:
        """Warm-up, then DeepSeek's three stages (100 %, 31.6 %, 10 % of the peak)."""
        if step <= self.warmup_iters:
            return self.lr * step / self.warmup_iters
        progress = step / self.train_iters
        if progress <= 0.8:
            return self.lr
        if progress <= 0.9:
            return self.lr * math.sqrt(0.1)
        return self.lr * 0.1


def decays(name: str, param) -> bool:
    """Megatron-LM's rule: matrices decay; biases and 1-D parameters (norm gains) do not."""
    return param.dim() >= 2 and not name.endswith(".bias")


def global_norm(params: list) -> float:
    """L2 norm of all gradients, each square summed in float64."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    for p in params:
        total += p.grad.detach().double().square().sum()
    return float(total.sqrt())


def train(hf_dir: str, global_batches: Iterable[list[dict]], cfg: ReferenceConfig) -> dict:
    """Train from ``hf_dir``; returns ``{"lm_loss": [...], "grad_norm": [...], "lr": [...]}``.

    ``global_batches`` yields, per step, its micro-batches: dicts of ``tokens``, ``labels``,
    ``loss_mask`` and ``position_ids``, each ``[micro_batch, seq]``.
    """
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.train()
    named = list(model.named_parameters())
    params = [p for _, p in named]
    decayed = [p for n, p in named if cfg.decay_norms or decays(n, p)]
    kept = [p for n, p in named if not (cfg.decay_norms or decays(n, p))]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}]
    if kept:
        groups.append({"params": kept, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(
        groups, lr=0.0, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps
    )
    history: dict[str, list[float]] = {"lm_loss": [], "grad_norm": [], "lr": []}
    for step, micro_batches in enumerate(global_batches, start=1):
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=False)
        loss_sum = torch.zeros((), dtype=torch.float32)
        tokens = torch.zeros((), dtype=torch.float32)
        for mb in micro_batches:
            logits = model(
                input_ids=mb["tokens"], position_ids=mb["position_ids"], use_cache=False
            ).logits  # [b, s, vocab]
            losses = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                mb["labels"].reshape(-1),
                reduction="none",
            )  # [b * s]
            mask = mb["loss_mask"].reshape(-1).float()
            masked_sum = (losses * mask).sum()
            masked_sum.backward()  # gradients of the sum; divided by the token count below
            loss_sum += masked_sum.detach()
            tokens += mask.sum()
        scale = 1.0 / tokens.clamp(min=1)
        for p in params:
            p.grad.mul_(scale)
        norm = global_norm(params)
        if cfg.clip_grad > 0:
            coeff = cfg.clip_grad / (norm + 1.0e-6)
            if coeff < 1.0:
                for p in params:
                    p.grad.mul_(coeff)
        optimizer.step()
        history["lm_loss"].append(float(loss_sum / tokens.clamp(min=1)))
        history["grad_norm"].append(norm)
        history["lr"].append(lr)
    return history
