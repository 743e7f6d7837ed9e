"""Run megatron-core's real CUDA code paths on CPU (gloo), for development and CI.

megatron-core 0.16.1 assumes CUDA throughout: it asks ``torch.cuda.current_device()`` for buffer
placement, creates tensors with ``device="cuda"`` in the pipeline schedules and optimizer, keeps
tensor-parallel RNG states in CUDA generators, and checks
``param.type() == "torch.cuda.FloatTensor"``. This module makes those calls resolve to the CPU, so
the *unchanged* tensor-parallel layers, sequence-parallel collectives, pipeline schedules, DDP,
distributed optimizer and dist_checkpointing run under ``torch.distributed`` with the gloo backend.

It is a deliberate, contained patch of a third-party library's expectations:

* it is inert when CUDA is available (:func:`activate` returns ``False`` and changes nothing);
* it is tested against the pinned megatron-core version (``tests/parallel/test_cpu_compat.py``);
* it is activated once, by :func:`activate`, before megatron-core builds anything.

Usage::

    from megatron_dscoder.parallel import cpu_compat
    cpu_compat.activate()   # no-op on a CUDA machine
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

logger = logging.getLogger(__name__)

_ACTIVE = False
_CPU = torch.device("cpu")


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int means a CUDA ordinal in torch's device arguments.
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to CPU and answers ``Tensor.type()`` in CUDA spelling."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs = {**kwargs, "device": _CPU}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to:
            args = tuple(_CPU if _is_cuda(a) and i > 0 else a for i, a in enumerate(args))
        elif func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if "cuda" not in name else name
        return func(*args, **kwargs)


class _NullStream:
    """Stands in for ``torch.cuda.Stream``/``Event``: every method is a no-op."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0


def _patch_cuda_namespace() -> None:
    cuda = torch.cuda
    cpu_gen = torch.default_generator

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        return cpu_gen.get_state()

    def set_rng_state(state: torch.Tensor, device: Any = "cuda") -> None:
        cpu_gen.set_state(state)

    def manual_seed(seed: int) -> None:
        cpu_gen.manual_seed(seed)

    def max_memory(*args: Any, **kwargs: Any) -> int:
        return 0

    patches: dict[str, Any] = {
        "current_device": lambda: _CPU,
        "synchronize": lambda *a, **k: None,
        "empty_cache": lambda: None,
        "Stream": _NullStream,
        "Event": _NullStream,
        "current_stream": lambda *a, **k: _NullStream(),
        "default_stream": lambda *a, **k: _NullStream(),
        "stream": lambda *a, **k: contextlib.nullcontext(),
        "set_device": lambda *a, **k: None,
        "get_rng_state": get_rng_state,
        "set_rng_state": set_rng_state,
        "manual_seed": manual_seed,
        "manual_seed_all": manual_seed,
        "default_generators": (cpu_gen,),
        "_lazy_call": lambda fn, **kwargs: fn(),
        "memory_allocated": max_memory,
        "max_memory_allocated": max_memory,
        "memory_reserved": max_memory,
        "reset_peak_memory_stats": lambda *a, **k: None,
    }
    for name, value in patches.items():
        setattr(cuda, name, value)
    for name in ("get_rng_state", "set_rng_state", "manual_seed", "manual_seed_all"):
        setattr(cuda.random, name, patches[name])

    # The tensor-parallel RNG tracker bound its own CUDA state accessors at import time.
    from megatron.core.tensor_parallel import random as tp_random

    tp_random._get_cuda_rng_state = lambda *a, clone=False, **k: (
        cpu_gen.get_state().clone() if clone else cpu_gen.get_state()
    )
    tp_random._set_cuda_rng_state = lambda state, *a, **k: cpu_gen.set_state(state)


def _reenter_mode_in_backward() -> None:
    """Autograd runs backward without the Python mode stack; custom Functions whose backward
    re-runs forward code (megatron-core's activation recomputation) would then create CUDA
    tensors. Every custom Function's backward therefore runs inside the mode again."""
    from torch.autograd.function import BackwardCFunction

    original = BackwardCFunction.apply

    def apply(self: Any, *args: Any) -> Any:
        if torch.overrides._get_current_function_mode_stack():
            return original(self, *args)
        with _CudaToCpuMode():
            return original(self, *args)

    BackwardCFunction.apply = apply


def activate() -> bool:
    """Make megatron-core's CUDA calls resolve to the CPU. Returns whether the layer is active.

    Does nothing (and returns ``False``) when a CUDA device is available, so the same entry point
    runs unchanged on a GPU cluster.
    """
    global _ACTIVE
    if _ACTIVE:
        return True
    if torch.cuda.is_available():
        return False
    _patch_cuda_namespace()
    _reenter_mode_in_backward()
    warnings.filterwarnings("ignore", message=".*CUDA_DEVICE_MAX_CONNECTIONS.*")  # GPU-only advice
    _CudaToCpuMode().__enter__()  # stays entered for the life of the process
    _ACTIVE = True
    logger.info("CUDA unavailable: megatron-core runs on CPU through the compatibility layer")
    return True


def is_active() -> bool:
    """Whether :func:`activate` has switched the process to the CPU layer."""
    return _ACTIVE
