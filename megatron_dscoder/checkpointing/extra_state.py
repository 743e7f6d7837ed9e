"""Transformer Engine's ``_extra_state`` entries across a backend switch (local spec <-> TE spec).

Both layer specs store the same weights under the same keys (the local spec maps its norm names
onto TE's). They differ only in ``_extra_state``, megatron-core's sharded *objects* for a
module's non-tensor state (TE: the FP8 scaling metadata, an empty byte tensor without FP8):

* megatron-core's local linears (``ColumnParallelLinear``/``RowParallelLinear``) save an empty
  ``_extra_state`` under the same keys as TE's linears (``linear_qkv``, ``linear_proj``,
  ``linear_fc1``, ``linear_fc2``), so those load either way;
* TE's norms have one and the local spec's ``RMSNorm`` has none: a TE model asks for
  ``decoder.final_layernorm._extra_state``, which a local-spec checkpoint (an HF import, every
  CPU or sdpa run) lacks, and torch_dist would refuse the load.

The rule: an ``_extra_state`` the model asks for and the checkpoint lacks keeps the model's fresh
value (it is not persistent for this load); one the checkpoint holds and the model does not ask
for is left unread. Both are counted in the log. Any other missing key still fails the load.
A fresh TE extra state means FP8 scaling restarts from its defaults: its amax history refills
within ``amax_history_len`` iterations.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import LocalNonpersistentObject, ShardedObject

from megatron_dscoder.checkpointing import safe_load

logger = logging.getLogger(__name__)

SUFFIX = "._extra_state"


def checkpoint_objects(ckpt_dir: str | Path) -> set[str]:
    """Keys of the sharded objects a torch_dist checkpoint holds (from its ``.metadata``)."""
    metadata = safe_load.read_metadata(ckpt_dir)
    # A sharded object is stored as "<key>/shard_<offset>_<shape>"; tensors have no "/shard_".
    return {fqn.split("/shard_")[0] for fqn in metadata.state_dict_metadata if "/shard_" in fqn}


def align(model_sd: dict[str, Any], saved: set[str], ckpt_dir: str | Path) -> dict[str, Any]:
    """``model_sd`` (a model's sharded state dict) with every ``_extra_state`` object that the
    checkpoint lacks made non-persistent (the module keeps its own value); logs both counts."""
    missing: list[str] = []
    out: dict[str, Any] = {}
    for name, value in model_sd.items():
        if (
            isinstance(value, ShardedObject)
            and value.key.endswith(SUFFIX)
            and value.key not in saved
        ):
            missing.append(value.key)
            out[name] = LocalNonpersistentObject(value.data)
        else:
            out[name] = value
    asked = {v.key for v in nested_values(model_sd) if isinstance(v, ShardedObject)}
    unread = sorted(k for k in saved - asked if k.endswith(SUFFIX))
    if missing:
        logger.info(
            "%s: %d _extra_state entr%s absent (saved by another layer spec, e.g. the local "
            "spec): kept as built (%s)",
            ckpt_dir,
            len(set(missing)),
            "y" if len(set(missing)) == 1 else "ies",
            ", ".join(sorted(set(missing))),
        )
    if unread:
        logger.info(
            "%s: %d _extra_state entr%s not used by this layer spec, left unread (%s)",
            ckpt_dir,
            len(unread),
            "y" if len(unread) == 1 else "ies",
            ", ".join(unread),
        )
    return out
