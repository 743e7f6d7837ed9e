# megatron_dscoder on NVIDIA's NGC PyTorch image (CUDA, NCCL, cuDNN, torch, Transformer Engine,
# FlashAttention come with the image; the repo adds megatron-core and its own pins around them).
#   docker build -t megatron_dscoder:latest .
#   docker run --gpus all --ipc=host --network=host --rm -it \
#       -v /shared:/shared megatron_dscoder:latest bash examples/pretrain_1.3b.sh
# 25.09 is the long-term-support release Megatron-LM's own CI image builds on.
FROM nvcr.io/nvidia/pytorch:25.09-py3

ARG MEGATRON_CORE_VERSION=0.16.1
# NGC pins its packages through PIP_CONSTRAINT; ours pin megatron-core and friends, so the
# image-wide constraint file is disabled for our installs while torch, Transformer Engine,
# NCCL and numpy stay exactly as NVIDIA built them (nothing below asks for other versions).
ENV PIP_CONSTRAINT="" \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    CUDA_DEVICE_MAX_CONNECTIONS=1 \
    WANDB_MODE=offline

WORKDIR /workspace/megatron_dscoder
COPY requirements.txt pyproject.toml README.md ./
RUN grep -v -E '^(#|numpy|megatron-core)' requirements.txt > /tmp/requirements-image.txt && \
    pip install "megatron-core==${MEGATRON_CORE_VERSION}" -r /tmp/requirements-image.txt

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
