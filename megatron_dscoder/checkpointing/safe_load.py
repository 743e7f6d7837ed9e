"""Load torch_dist checkpoints without running code from them (as far as the format allows).

torch_dist stores its index (``.metadata``) as a pickle and small objects (RNG states, extra
states) as ``torch.save`` blobs that ``torch.distributed.checkpoint`` reads with
``weights_only=False``: a crafted checkpoint runs arbitrary code at ``--load``. :func:`install`
closes both from our side:

- ``.metadata`` is read with :class:`MetadataUnpickler`, which resolves only the classes the
  index is made of (torch.distributed.checkpoint's metadata/planner records, ``torch.Size``,
  dtypes, layouts, paths: the checkpoint id); anything else (``os.system``, ``builtins.eval``, ...)
  is refused unrun;
- byte objects are read with ``weights_only=True`` plus the numpy types of an RNG state.

Checkpoints must still be trusted like code: the weights themselves are not validated, and
``common.pt`` is read by megatron-core's ``torch.load`` (``weights_only=True`` by default since
torch 2.6). See the README's "Checkpoints are code" note.
"""

from __future__ import annotations

import io
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

_DCP = "torch.distributed.checkpoint."
_ALLOWED: dict[str, frozenset[str]] = {
    _DCP + "metadata": frozenset(
        {
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        }
    ),
    _DCP + "planner": frozenset(
        {"SavePlan", "WriteItem", "WriteItemType", "TensorWriteData", "LoadPlan", "ReadItem"}
    ),
    _DCP + "filesystem": frozenset({"_StorageInfo"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "collections": frozenset({"OrderedDict"}),
    "pathlib": frozenset({"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}),
}
_RNG_GLOBALS = [np.ndarray, np.dtype, np._core.multiarray._reconstruct, type(np.dtype(np.uint32))]


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names something outside the allow-list (refused before it is resolved)."""


class MetadataUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the classes of a torch_dist index."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and (
            name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return getattr(torch, name)
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise ForbiddenGlobal(
            f"{module}.{name} is not part of a checkpoint index (refused, not run)"
        )


def restricted_load(file: Any, **_: Any) -> Any:
    """``pickle.load`` for ``.metadata`` files."""
    return MetadataUnpickler(file).load()


def read_metadata(ckpt_dir: str | Path) -> Any:
    """The torch_dist ``Metadata`` of a checkpoint directory, read without running code."""
    with open(Path(ckpt_dir) / ".metadata", "rb") as f:
        return restricted_load(f)


def load_bytes_object(value: io.BytesIO) -> Any:
    """A byte object of a checkpoint (RNG state, extra state): tensors, containers, numpy."""
    with torch.serialization.safe_globals(_RNG_GLOBALS):
        return torch.load(value, weights_only=True)


def install() -> None:
    """Route torch.distributed.checkpoint's two unpickling paths through the readers above."""
    from torch.distributed.checkpoint import default_planner, filesystem

    if getattr(filesystem.pickle, "restricted", False):
        return
    shim = types.SimpleNamespace(**{k: getattr(pickle, k) for k in dir(pickle) if k[0] != "_"})
    shim.load, shim.restricted = restricted_load, True
    filesystem.pickle = shim

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        obj = load_bytes_object(value)
        if self.flatten_state_dict:
            default_planner.set_element(
                self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj
            )
        else:
            self.state_dict[read_item.dest_index.fqn] = obj

    default_planner.DefaultLoadPlanner.load_bytes = load_bytes
