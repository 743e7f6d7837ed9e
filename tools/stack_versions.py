"""Print the GPU stack's versions, one ``name version`` line each, sorted (stdlib + torch only).

    python tools/stack_versions.py > before.txt
    pip install ...
    python tools/stack_versions.py | diff before.txt -

The Dockerfile runs it before and after installing the project's requirements and fails the
build on any difference: torch, CUDA, cuDNN, NCCL, Transformer Engine, flash-attn, triton, apex,
numpy and NVIDIA's own wheels stay as NVIDIA built them. Also what a bug report should include.
"""

import re
import sys
from importlib import metadata

STACK = re.compile(
    r"^(torch|transformer[-_]engine.*|flash[-_]attn.*|triton|pytorch[-_]triton|apex|numpy"
    r"|nvidia[-_].*)$",
    re.IGNORECASE,
)


def stack_versions() -> dict[str, str]:
    """Distribution versions of the stack, plus the libraries torch was built with."""
    found = {
        dist.metadata["Name"].lower().replace("_", "-"): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"] and STACK.match(dist.metadata["Name"])
    }
    try:
        import torch

        found["cuda (torch build)"] = str(torch.version.cuda)
        found["cudnn (torch build)"] = str(torch.backends.cudnn.version())
        try:
            found["nccl (torch build)"] = ".".join(map(str, torch.cuda.nccl.version()))
        except (AttributeError, RuntimeError):
            found["nccl (torch build)"] = "unavailable"
    except ImportError:
        found["torch"] = "not importable"
    return found


if __name__ == "__main__":
    for name, version in sorted(stack_versions().items()):
        sys.stdout.write(f"{name} {version}\n")
