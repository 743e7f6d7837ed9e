"""Resuming megatron-core's distributed optimizer when it wraps torch's Adam (no apex/TE).

megatron-core 0.16.1 expects apex's or Transformer Engine's fused Adam, which keep the step count
in the param groups. torch's Adam keeps a per-parameter ``step`` tensor instead, and two code
paths of ``DistributedOptimizer`` then fail on resume (on CPU always, on GPU without apex/TE):

* ``state_dict()`` (called to describe the optimizer for loading) reads every parameter's
  ``step``, which a fresh optimizer does not have yet: :func:`allocate_state` allocates the state
  its ``init_state_fn`` would, plus ``step``; the load overwrites all of it;
* loading copies every per-parameter state tensor, ``step`` included, although both formats
  this project writes store ``step`` in the param groups (from which megatron-core already
  restored it): the fully reshardable format does not hold a ``step`` tensor at all, and the
  ``dp_reshardable`` one hands back the fresh optimizer's (a non-persistent entry, next to a
  ``padding`` flag). :func:`install` makes that copy take only the tensors the optimizer keeps
  (``param``, ``exp_avg``, ``exp_avg_sq``), and gives each parameter its own ``step`` tensor
  (megatron-core restores one tensor shared by all, which torch's Adam would then advance once
  per parameter).

The resumed run is bitwise the uninterrupted one (``tests/training/test_resume.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

_ORIGINAL_SET = DistributedOptimizer._set_main_param_and_optimizer_states


def _set_main_param_and_optimizer_states(
    self: DistributedOptimizer, model_param: torch.nn.Parameter, tensors: dict[str, torch.Tensor]
) -> None:
    if self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
        return _ORIGINAL_SET(self, model_param, tensors)
    group_index, group_order = self.model_param_group_index_map[model_param]
    main_param = self.optimizer.param_groups[group_index]["params"][group_order]
    state = self.optimizer.state[main_param]
    if "step" in state:
        state["step"] = state["step"].clone()
    targets = {"param": main_param, **state}
    with torch.no_grad():  # fp32 without bf16: the main param is a view of the model's (a leaf)
        for key, value in tensors.items():
            if key in targets and key != "step":
                targets[key].copy_(value)
    return None


def install() -> None:
    """Patch the state copy (idempotent); the fused apex/TE path never reaches the change."""
    DistributedOptimizer._set_main_param_and_optimizer_states = _set_main_param_and_optimizer_states


def allocate_state(optimizer: Any) -> None:
    """Give each fresh distributed optimizer (torch Adam inside) the state a load overwrites."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        if not isinstance(opt, DistributedOptimizer) or opt.optimizer.state:
            continue
        if opt.init_state_fn is not None:
            opt.init_state_fn(opt.optimizer, opt.config)
        for group in opt.optimizer.param_groups:
            for param in group["params"]:
                opt.optimizer.state[param].setdefault("step", torch.zeros((), dtype=torch.float32))
