"""How a checkpoint lays out the distributed optimizer's state, and who writes and reads what.

megatron-core 0.16.1 offers three layouts for ``DistributedOptimizer.sharded_state_dict``; which
one a save uses decides the host memory and the bytes per rank at scale:

* ``dp_reshardable`` (routine saves; Megatron-LM's default): each data-parallel rank writes its
  own slice of the optimizer buckets straight from its tensors, without a gather. Host memory and
  bytes per rank are ~1/DP of the TP x PP shard's state. It loads at any DP size (the buckets do
  not depend on it: parameters start 64-aligned and buckets end 128-aligned whatever the DP, so
  each bucket's unpadded length is the same) but only at the TP x PP layout that wrote it.
* ``fully_reshardable`` (``--ckpt-fully-reshardable``; Megatron-LM's
  ``--dist-ckpt-optim-fully-reshardable``): the state in model space (one tensor per parameter),
  which loads at any TP, PP and DP. Writing it gathers the whole TP x PP shard: here on DP rank 0
  only (megatron-core's memory-efficient variant, over gloo), so one rank per DP group holds the
  shard's state (12 bytes per parameter) for the save; at load every rank holds the whole of it
  for a moment (read once per DP group and exchanged).
  The format of this project's checkpoints before routine saves became ``dp_reshardable``.
* ``fully_sharded_model_space`` (megatron-core's own default) cannot be saved by 0.16.1: it
  describes each slice with ``ShardedTensor.flattened_range``, which that release's
  ``validate_metadata_integrity`` refuses.

Replicated tensors (the weights without the distributed optimizer, or the model itself with it)
are written once in total, spread over the data-parallel group by megatron-core's
``FullyParallelSaveStrategyWrapper``; each rank reads its share and the shares are exchanged by
``FullyParallelLoadStrategyWrapper``. ``benchmarks/bench_checkpoint_scaling.py`` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megatron.core import parallel_state
from megatron.core.dist_checkpointing.strategies.fully_parallel import (
    FullyParallelLoadStrategyWrapper,
    FullyParallelSaveStrategyWrapper,
)
from megatron.core.dist_checkpointing.strategies.torch import (
    TorchDistLoadShardedStrategy,
    TorchDistSaveShardedStrategy,
)
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

DP_RESHARDABLE = "dp_reshardable"
FULLY_RESHARDABLE = "fully_reshardable"
LEGACY = FULLY_RESHARDABLE
"""The layout of a checkpoint that does not record one (written before the field existed)."""


@dataclass(frozen=True)
class SaveFormat:
    """What a save writes and how: the optimizer layout, megatron-core's memory-efficient gather
    for the fully reshardable one, the fully-parallel write over DP, background writing."""

    optimizer: str = DP_RESHARDABLE
    mem_efficient: bool = True
    """``fully_reshardable`` only: gather on DP rank 0 (not on every rank)."""
    fully_parallel: bool = True
    async_save: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in (DP_RESHARDABLE, FULLY_RESHARDABLE):
            raise ValueError(f"unknown optimizer checkpoint format {self.optimizer!r}")

    @classmethod
    def of(cls, *, fully_reshardable: bool, async_save: bool) -> SaveFormat:
        """The format of ``--ckpt-fully-reshardable`` / ``--async-save``."""
        return cls(
            optimizer=FULLY_RESHARDABLE if fully_reshardable else DP_RESHARDABLE,
            async_save=async_save,
        )

    def optimizer_metadata(self) -> dict[str, Any]:
        """The ``metadata`` argument of ``DistributedOptimizer.sharded_state_dict``."""
        return optimizer_metadata(self.optimizer, self.mem_efficient)


def optimizer_metadata(layout: str, mem_efficient: bool = True) -> dict[str, Any]:
    """``sharded_state_dict`` metadata selecting ``layout`` (a load needs no gather option)."""
    meta: dict[str, Any] = {"distrib_optim_sharding_type": layout}
    if layout == FULLY_RESHARDABLE:
        meta["distrib_optim_fully_reshardable_mem_efficient"] = mem_efficient
    return meta


def is_distributed(optimizer: Any) -> bool:
    """Whether ``optimizer`` (possibly megatron-core's chain) holds DP-sharded state."""
    if optimizer is None:
        return False
    chain = getattr(optimizer, "chained_optimizers", [optimizer])
    return any(isinstance(opt, DistributedOptimizer) for opt in chain)


def _dp_group() -> Any:
    return parallel_state.get_data_parallel_group(with_context_parallel=True)


def save_strategy(fully_parallel: bool = True) -> Any:
    """torch_dist's writer, spread over the data-parallel group unless ``fully_parallel`` is off
    (then DP rank 0 writes every replicated tensor, as before this module existed)."""
    base = TorchDistSaveShardedStrategy("torch_dist", 1)
    if not fully_parallel:
        return base
    return FullyParallelSaveStrategyWrapper(base, _dp_group())


def load_strategy() -> Any:
    """torch_dist's reader, each replicated tensor read once per DP group and exchanged."""
    return FullyParallelLoadStrategyWrapper(TorchDistLoadShardedStrategy(), _dp_group())


def layout_problem(
    saved: dict[str, Any], layout: str | None, *, tp: int, pp: int, distributed: bool
) -> str | None:
    """Why an optimizer state of ``layout`` written at ``saved`` ({"tp", "pp", "dp"}) cannot be
    loaded by this run (None: it can). Only ``dp_reshardable`` is bound to a layout."""
    if layout != DP_RESHARDABLE:
        return None
    if (saved.get("tp"), saved.get("pp")) == (tp, pp) and distributed:
        return None
    now = f"tensor-model-parallel-size {tp}, pipeline-model-parallel-size {pp}"
    return (
        "its distributed-optimizer state is in the dp_reshardable format, which loads at any "
        f"data-parallel size but only at tensor-model-parallel-size {saved.get('tp')}, "
        f"pipeline-model-parallel-size {saved.get('pp')} with --use-distributed-optimizer "
        f"(this run: {now}{'' if distributed else ', no distributed optimizer'}). Resume at "
        "that layout, or add --no-load-optim to take the weights and counters only; to change "
        "layout with the optimizer state, save once at that layout with --ckpt-fully-reshardable"
    )
