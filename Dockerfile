# megatron_dscoder on NVIDIA's NGC PyTorch image (CUDA, NCCL, cuDNN, torch, Transformer Engine,
# FlashAttention come with the image; the repo adds megatron-core and its own pins around them).
#   docker build -t megatron_dscoder:latest .
#   docker run --gpus all --ipc=host --network=host --rm -it \
#       -v /shared:/shared megatron_dscoder:latest bash examples/pretrain_1.3b.sh
# W&B goes online when the run finds a key (WANDB_API_KEY, or a netrc from `wandb login`) and
# stays offline without one: pass `-e WANDB_API_KEY` to go online, `-e WANDB_MODE=...` to force.
#
# Why 25.12: the newest NGC PyTorch release whose whole stack megatron-core 0.16.1 supports.
#   torch 2.10.0a0          megatron-core needs torch>=2.6; this is the project's oldest torch
#                           (the launchers pass torchrun no option it lacks)
#   Transformer Engine 2.10 megatron-core declares transformer-engine>=2.9.0a0,<2.12.0
#   flash-attn 2.7.4.post1  the FlashAttention-2 NVIDIA pairs with TE 2.10 (TE turns its flash
#                           backend off for versions it was not tested with)
#   NCCL 2.28.9, CUDA 13.1
# 25.09 (Megatron-LM's LTS base) ships a TE older than 2.9; 25.11 has TE 2.9 and an older torch
# build. A later tag may ship a TE outside megatron-core's range: the version check below fails
# the build then, instead of megatron-core silently falling back (it imports TE under try/except).
FROM nvcr.io/nvidia/pytorch:25.12-py3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG MEGATRON_CORE_VERSION=0.16.1
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    CUDA_DEVICE_MAX_CONNECTIONS=1

WORKDIR /workspace/megatron_dscoder
COPY requirements.txt pyproject.toml README.md ./
COPY tools/stack_versions.py ./tools/
# NGC pins every package it built through PIP_CONSTRAINT (/etc/pip/constraint.txt). Our pins move
# some of its pure-Python packages (transformers, wandb, protobuf...), so our installs keep only
# the constraint lines of the GPU stack (torch, TE, flash-attn, triton, apex, NVIDIA's wheels),
# and the stack's versions are recorded before and compared after: any change fails the build.
RUN python tools/stack_versions.py > /tmp/stack-before.txt && \
    grep -i -E '^(torch|transformer[-_]engine|flash[-_]attn|triton|pytorch[-_]triton|apex|numpy|nvidia[-_])' \
        "${PIP_CONSTRAINT:?the NGC image sets PIP_CONSTRAINT}" > /tmp/stack-constraints.txt && \
    grep -v -E '^(#|numpy|megatron-core)' requirements.txt > /tmp/requirements-image.txt && \
    PIP_CONSTRAINT=/tmp/stack-constraints.txt \
        pip install "megatron-core==${MEGATRON_CORE_VERSION}" -r /tmp/requirements-image.txt && \
    python tools/stack_versions.py | diff /tmp/stack-before.txt - && \
    python -c "import importlib.metadata as m; from packaging.version import Version as V; \
te = V(m.version('transformer_engine')); m.version('flash_attn'); \
assert V('2.9.0a0') <= te < V('2.12.0'), f'TE {te} is outside megatron-core 0.16.1 range'" && \
    cp /tmp/stack-before.txt /workspace/stack-versions.txt

# megatron-core's dataset index helpers are C++: make sure they exist now, never at job start
# (a runtime compile on rank 0 is a classic source of NCCL watchdog timeouts).
# The include flags are several words on purpose (SC2046).
# hadolint ignore=SC2046
RUN python -c "from megatron.core.datasets import helpers_cpp" 2>/dev/null || ( \
    dir="$(python -c 'import megatron.core.datasets as d, os; print(os.path.dirname(d.__file__))')" && \
    g++ -O3 -shared -std=c++17 -fPIC $(python -m pybind11 --includes) "${dir}/helpers.cpp" \
        -o "${dir}/helpers_cpp$(python3-config --extension-suffix)" ) && \
    python -c "from megatron.core.datasets import helpers_cpp; import transformer_engine"

COPY megatron_dscoder ./megatron_dscoder
COPY tools ./tools
COPY examples ./examples
RUN pip install --no-deps --no-build-isolation -e . && \
    python -m megatron_dscoder.pretrain --model 33b --dry-run \
        --tensor-model-parallel-size 4 --pipeline-model-parallel-size 2 > /dev/null
