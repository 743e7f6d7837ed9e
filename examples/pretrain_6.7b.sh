#!/usr/bin/env bash
# DeepSeek-Coder 6.7B, 4K stage (1.8T tokens, 190.7k iterations at 2304 x 4096).
# Laid out for 16 nodes of 8 x H800 80GB (128 GPUs): TP=1, PP=1, DP=128, distributed optimizer,
# micro-batch 1 (18 micro-batches per DP rank). With ZeRO-1-style sharding the 6.7B model still
# fits one GPU without tensor parallelism. Planner (--dry-run --world-size 128
# --use-distributed-optimizer): 62.4 GiB per GPU, margin 17.6 GiB; TP=2 + SP would use 31.5 GiB
# at the cost of TP all-gathers on every layer.
#   NNODES=16 NODE_RANK=<0..15> MASTER_ADDR=<node 0> bash examples/pretrain_6.7b.sh [extra args]
set -euo pipefail
RUN_NAME=${RUN_NAME:-dscoder-6.7b}
# shellcheck source=examples/_launch.sh
source "$(dirname "$0")/_launch.sh"
model_args=(--model 6.7b)
parallel_args=(--tensor-model-parallel-size 1 --pipeline-model-parallel-size 1
               --use-distributed-optimizer)
train_args=(--micro-batch-size 1)
# Megatron-LM's H100 Llama-3 example switches (the fusions are on by default where TE/apex are):
perf_args=(--overlap-grad-reduce --overlap-param-gather --cross-entropy-loss-fusion --manual-gc)
launch 1 "${model_args[@]}" "${parallel_args[@]}" "${train_args[@]}" "${perf_args[@]}" "$@"
