"""The torch_dist side of a conversion: read and write megatron-core checkpoints, streaming.

Host memory stays about one layer plus the embeddings, never the whole model:

* **reading** (:class:`CheckpointReader`) loads one layer's slice of each stacked tensor at a
  time (megatron-core stacks decoder layers along a prepended axis): torch's distributed-checkpoint
  reader, which megatron-core's torch_dist format is built on, resolves the slice against the
  stored chunks of whatever TP/PP layout wrote them and reads only those (``weights_only``
  deserialisation, no process group). megatron-core's own ``dist_checkpointing.load`` cannot ask
  for part of a tensor in a one-rank world (it places the rest of the grid on "other" ranks);
* **writing** (:func:`write_checkpoint`) describes the checkpoint with the sharded state dict of a
  real ``GPTModel`` built on the ``meta`` device (so keys, shapes and ``_extra_state`` objects are
  exactly what ``GPTModel.sharded_state_dict()`` gives), re-chunked as the chosen tensor-parallel
  size saves it, and hands it to megatron-core's ``dist_checkpointing.save`` (``common.pt``,
  ``metadata.json``, validation) with a save strategy whose planner produces each chunk's data
  only when torch's one-thread ``FileSystemWriter`` asks for it. torch 2.13's writer keeps the last
  chunk of each tensor until the file closes: about one layer plus the embeddings.

Writing needs a process group (:func:`one_rank_group`, gloo; conversion always runs on the CPU).
Example, on a checkpoint written by ``python -m megatron_dscoder.pretrain --model debug
--mock-data --train-iters 2 --save out/toy``::

    arch = ModelArch(**read_checkpoint_metadata("out/toy/iter_0000002")["arch"])
    layer0 = CheckpointReader("out/toy/iter_0000002", arch).layer(0)   # {stacked key: tensor}
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, apply_factories
from megatron.core.dist_checkpointing.strategies.cached_metadata_filesystem_reader import (
    CachedMetadataFileSystemReader,
)
from megatron.core.dist_checkpointing.strategies.torch import (
    MCoreSavePlanner,
    TorchDistSaveShardedStrategy,
    _replace_state_dict_keys_with_sharded_keys,
    mcore_to_pyt_state_dict,
)
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemWriter
from torch.distributed.checkpoint import load as dcp_load
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan, WriteItem, WriteItemType
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megatron_dscoder.convert.keymap import BY_STACKED_KEY
from megatron_dscoder.errors import UserError
from megatron_dscoder.model.registry import ModelArch

logger = logging.getLogger(__name__)

#: Produces the data of one chunk: (stacked key, layer or None, start, stop along the TP axis).
ChunkProducer = Callable[[str, int | None, int, int], torch.Tensor]


class CheckpointFormatError(UserError, ValueError):
    """A torch_dist checkpoint whose tensors do not match its recorded architecture."""


@contextlib.contextmanager
def one_rank_group() -> Iterator[None]:
    """A one-rank gloo process group with megatron-core's TP=PP=1 groups, torn down after."""
    from megatron_dscoder.config.run import ParallelConfig
    from megatron_dscoder.parallel import distributed

    already = torch.distributed.is_initialized()
    distributed.initialize(ParallelConfig(), seed=0)
    try:
        yield
    finally:
        distributed.destroy(keep_process_group=already)


# ---- reading --------------------------------------------------------------------------------


class _SlicePlanner(DefaultLoadPlanner):
    """Loads each requested tensor as one chunk at a given global offset (torch's resharding)."""

    def __init__(self, offsets: dict[str, tuple[int, ...]]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.offsets = offsets

    def create_local_plan(self) -> LoadPlan:
        items = []
        for fqn, tensor in self.state_dict.items():
            chunk = ChunkStorageMetadata(offsets=torch.Size(self.offsets[fqn]), sizes=tensor.size())
            items += create_read_items_for_chunk_list(
                fqn, self.metadata.state_dict_metadata[fqn], [chunk]
            )
        return LoadPlan(items)

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self.state_dict[index.fqn]  # one chunk per tensor: the offset names it


class CheckpointReader:
    """Loads one decoder layer (or the embedding/output/final norm) of a torch_dist checkpoint.

    A layer is read as a one-layer slice of each stacked tensor: torch's distributed-checkpoint
    reader opens only the stored chunks (any TP/PP layout) that overlap it. No process group is
    needed, and tensors are deserialised with ``weights_only=True``.
    """

    def __init__(self, ckpt_dir: str | Path, arch: ModelArch) -> None:
        self.ckpt_dir = str(ckpt_dir)
        self.arch = arch
        # one reader for all loads: the pickled .metadata is read once, not once per layer
        self._storage = CachedMetadataFileSystemReader(self.ckpt_dir)
        meta = self._storage.read_metadata().state_dict_metadata
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for key, mapping in BY_STACKED_KEY.items():
            if key not in meta:
                raise CheckpointFormatError(f"{self.ckpt_dir}: no tensor {key!r} in the checkpoint")
            shape = tuple(meta[key].size)
            if mapping.per_layer and shape[0] != arch.num_layers:
                raise CheckpointFormatError(
                    f"{self.ckpt_dir}: {key} stacks {shape[0]} layers, but run_config.json "
                    f"says num_layers={arch.num_layers}"
                )
            self.shapes[key] = shape[1:] if mapping.per_layer else shape
            self.dtypes[key] = meta[key].properties.dtype
        self.vocab_rows = self.shapes["embedding.word_embeddings.weight"][0]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights were saved in (that of the fused QKV)."""
        return self.dtypes["decoder.layers.self_attention.linear_qkv.weight"]

    def _load(self, keys: list[str], layer: int | None) -> dict[str, torch.Tensor]:
        state, offsets = {}, {}
        for key in keys:
            shape = self.shapes[key]
            if layer is None:
                state[key] = torch.empty(shape, dtype=self.dtypes[key])
                offsets[key] = (0,) * len(shape)
            else:
                state[key] = torch.empty((1, *shape), dtype=self.dtypes[key])
                offsets[key] = (layer,) + (0,) * len(shape)
        dcp_load(state, storage_reader=self._storage, planner=_SlicePlanner(offsets), no_dist=True)
        return {k: v[0] if layer is not None else v for k, v in state.items()}

    def layer(self, layer: int) -> dict[str, torch.Tensor]:
        """Every stacked tensor of decoder layer ``layer`` (full, unsharded), by stacked key."""
        return self._load([k for k, m in BY_STACKED_KEY.items() if m.per_layer], layer)

    def globals(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """Non-layer tensors (embedding, final norm, output layer) by key."""
        return self._load(keys, None)


# ---- writing --------------------------------------------------------------------------------


def _meta_model_state(arch: ModelArch) -> dict[str, Any]:
    """``GPTModel.sharded_state_dict()`` of a TP=PP=1 model whose parameters are on ``meta``."""
    from megatron_dscoder.model.build import build_model, transformer_config

    config = transformer_config(arch)
    with torch.device("meta"):
        model = build_model(arch, config, attention_backend="unfused")
    state = model.sharded_state_dict()
    apply_factories(state)  # SwiGLU fc1 -> its gate and up chunks
    return state


def _rechunk(sh: ShardedTensor, tp: int, dtype: torch.dtype) -> list[ShardedTensor]:
    """The chunks that ``tp`` tensor-parallel ranks would save of one TP=1 chunk."""
    mapping = BY_STACKED_KEY.get(sh.key)
    if mapping is None:
        raise CheckpointFormatError(f"no Hugging Face mapping for megatron tensor {sh.key!r}")
    if mapping.tp_axis is None or tp == 1:
        pieces, axis = 1, None
    else:
        pieces, axis = tp, sh.prepend_axis_num + mapping.tp_axis
    chunks = []
    for rank in range(pieces):
        local_shape = list(sh.local_shape)
        offset = list(sh.global_offset)
        frags = list(sh.axis_fragmentations)
        if axis is not None:
            size = sh.local_shape[axis - sh.prepend_axis_num] // pieces
            local_shape[axis - sh.prepend_axis_num] = size
            offset[axis] += rank * size
            frags[axis] *= pieces
        chunks.append(
            dataclasses.replace(
                sh,
                data=torch.empty(local_shape, dtype=dtype, device="meta"),
                dtype=dtype,
                local_shape=tuple(local_shape),
                global_offset=tuple(offset),
                axis_fragmentations=tuple(frags),
            )
        )
    return chunks


def checkpoint_structure(
    arch: ModelArch, tensor_model_parallel_size: int, dtype: torch.dtype
) -> dict[str, Any]:
    """The model's sharded state dict, data on ``meta``, chunked as ``tp`` ranks save it.

    Chunks of one tensor are listed under ``"<state key>#<n>"``; megatron-core only uses the
    ShardedTensor keys and offsets, so the dict keys are free.
    """
    flat: dict[str, Any] = {}
    for name, value in _meta_model_state(arch).items():
        if isinstance(value, ShardedObject):
            flat[name] = value
            continue
        values = value if isinstance(value, list) else [value]
        for n, sh in enumerate(
            v for item in values for v in _rechunk(item, tensor_model_parallel_size, dtype)
        ):
            flat[f"{name}#{n}"] = sh
    return flat


class _LazyPlanner(MCoreSavePlanner):
    """megatron-core's save planner whose tensor data is produced when the writer asks for it."""

    def __init__(self, produce: ChunkProducer, prepend: dict[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.produce = produce
        self.prepend = prepend

    def resolve_data(self, write_item: WriteItem) -> Any:
        if write_item.type == WriteItemType.BYTE_IO:
            return super().resolve_data(write_item)
        key = write_item.index.fqn
        offset = tuple(write_item.index.offset)
        sizes = tuple(write_item.tensor_data.chunk.sizes)
        layer = offset[0] if self.prepend[key] else None
        axis = BY_STACKED_KEY[key].tp_axis
        if axis is None:
            start = stop = 0
        else:
            start = offset[self.prepend[key] + axis]
            stop = start + sizes[self.prepend[key] + axis]
        tensor = self.produce(key, layer, start, stop)
        expected = sizes[self.prepend[key] :]
        if tuple(tensor.shape) != expected:
            raise CheckpointFormatError(
                f"{key} layer {layer} [{start}:{stop}]: produced "
                f"{tuple(tensor.shape)}, expected {expected}"
            )
        dtype = write_item.tensor_data.properties.dtype
        return tensor.to(dtype).contiguous().view(sizes).clone()


class _StreamingStrategy(TorchDistSaveShardedStrategy):
    """torch_dist saving through the lazy planner and torch's one-item-at-a-time writer."""

    def __init__(self, produce: ChunkProducer) -> None:
        super().__init__("torch_dist", 1, thread_count=1)
        self.produce = produce

    def save(self, sharded_state_dict: dict[str, Any], checkpoint_dir: Path) -> None:
        state, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, True)
        prepend = {
            sh.key: sh.prepend_axis_num
            for shards in state.values()
            for sh in shards
            if isinstance(sh, ShardedTensor)
        }
        planner = _LazyPlanner(
            self.produce, prepend, dedup_replicated_tensors=False, flatten_state_dict=False
        )
        dcp_save(
            mcore_to_pyt_state_dict(state, False),
            storage_writer=FileSystemWriter(str(checkpoint_dir), thread_count=1),
            planner=planner,
        )


def write_checkpoint(
    ckpt_dir: str | Path,
    arch: ModelArch,
    produce: ChunkProducer,
    *,
    tensor_model_parallel_size: int,
    dtype: torch.dtype,
    common: dict[str, Any],
) -> None:
    """Write a torch_dist checkpoint of ``arch`` whose tensor data comes from ``produce``.

    ``common`` (plain Python values) goes into ``common.pt`` next to the ``"model"`` state, as
    the training loop's own checkpoints hold it. ``ckpt_dir`` must exist and be empty.
    """
    state = {"model": checkpoint_structure(arch, tensor_model_parallel_size, dtype), **common}
    dist_checkpointing.save(state, str(ckpt_dir), sharded_strategy=_StreamingStrategy(produce))
