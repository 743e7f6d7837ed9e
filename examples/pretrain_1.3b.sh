#!/usr/bin/env bash
# DeepSeek-Coder 1.3B, 4K stage (1.8T tokens, 429k iterations at 1024 x 4096).
# Laid out for 8 nodes of 8 x H800 80GB (64 GPUs): TP=1, PP=1, DP=64, distributed optimizer,
# micro-batch 4 (4 micro-batches per DP rank). The model fits one GPU, so pure data parallelism
# avoids all model-parallel communication. Planner (--dry-run --world-size 64
# --use-distributed-optimizer --micro-batch-size 4): 47.4 GiB per GPU, margin 32.6 GiB (sdpa build).
#   NNODES=8 NODE_RANK=<0..7> MASTER_ADDR=<node 0> bash examples/pretrain_1.3b.sh [extra args]
set -euo pipefail
RUN_NAME=${RUN_NAME:-dscoder-1.3b}
# shellcheck source=examples/_launch.sh
source "$(dirname "$0")/_launch.sh"
model_args=(--model 1.3b)
parallel_args=(--tensor-model-parallel-size 1 --pipeline-model-parallel-size 1
               --use-distributed-optimizer)
train_args=(--micro-batch-size 4)
# Megatron-LM's H100 Llama-3 example switches (the fusions are on by default where TE/apex are):
perf_args=(--overlap-grad-reduce --overlap-param-gather --cross-entropy-loss-fusion --manual-gc)
launch 1 "${model_args[@]}" "${parallel_args[@]}" "${train_args[@]}" "${perf_args[@]}" "$@"
