"""torchrun itself (``torch.distributed.run.main``, every flag as usual), started after the
training stack is imported, its ranks forked from it (``--run-path --start-method fork``).

A fresh interpreter spends about 4 CPU-seconds importing megatron-core (it pulls in torch's
compiler stack for its fused kernels and W&B for its inference contexts); for a few iterations
of the debug model that is most of a rank's work. Forked ranks start with those modules loaded,
so a 2-rank launch costs about 40 % less CPU; nothing else changes: the same script, flags,
gloo groups and rendezvous, the same losses bit for bit. Tests of the launcher's own behaviour
(SIGKILL or SIGTERM to torchrun, its workers' sessions) use the plain ``torchrun``; forking is
for CPU test runs only (a process that has initialised CUDA must not fork).

    python tests/workers/preloaded_torchrun.py --run-path --start-method fork \\
        --nproc-per-node 2 tests/workers/layouts.py OUT NAME "FLAGS"
"""

import importlib

from torch.distributed.run import main

PRELOADED = (
    "megatron.core",
    "megatron_dscoder.checkpointing.checkpoint",
    "megatron_dscoder.training.loop",
)
"""What a rank imports before its first step (all but a few light modules of a run)."""

if __name__ == "__main__":
    for name in PRELOADED:
        importlib.import_module(name)
    main()
