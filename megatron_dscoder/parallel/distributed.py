"""Process groups: torch.distributed plus megatron-core's model-parallel groups, on GPU or CPU.

Launched by ``torchrun`` the usual environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) is read; launched as a plain ``python -m`` one process forms a
world of one. Without CUDA the gloo backend is used and megatron-core runs through
:mod:`megatron_dscoder.parallel.cpu_compat`.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

from megatron_dscoder.config.run import ParallelConfig
from megatron_dscoder.parallel import cpu_compat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize(parallel: ParallelConfig, seed: int, timeout_minutes: int = 10) -> None:
    """Create the default process group and megatron-core's TP/PP/DP groups, and seed RNGs."""
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        cpu_compat.activate()
        # Ranks share the machine's cores: oversubscribed intra-op threads stall gloo collectives.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if "RANK" not in os.environ:  # single process without torchrun
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="nccl" if on_gpu else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        context_parallel_size=parallel.context_parallel_size,
    )
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)


def destroy(keep_process_group: bool = False) -> None:
    """Tear down megatron-core's groups and (unless kept) the default process group."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized() and not keep_process_group:
        torch.distributed.destroy_process_group()


def is_logging_rank() -> bool:
    """The last rank logs: it sits on the last pipeline stage, where the loss is known."""
    return torch.distributed.get_rank() == torch.distributed.get_world_size() - 1


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Collective over the default group: for each flag, whether it is true on at least one rank
    (one all-reduce for all of them, so every rank takes the same branch)."""
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    values = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
    return tuple(bool(v) for v in values.tolist())
