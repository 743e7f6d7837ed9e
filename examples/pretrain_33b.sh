#!/usr/bin/env bash
# DeepSeek-Coder 33B, 4K stage (1.8T tokens, 114.4k iterations at 3840 x 4096).
# Laid out for 32 nodes of 8 x H800 80GB (256 GPUs): TP=4 inside NVLink islands with sequence
# parallelism, PP=2 (31 + 31 layers, 1F1B, 120 micro-batches: 0.8 % bubble), DP=32 with the
# distributed optimizer, no activation recomputation. Planner (--dry-run --world-size 256
# --tensor-model-parallel-size 4 --pipeline-model-parallel-size 2 --sequence-parallel
# --use-distributed-optimizer): peak 42.4 GiB per GPU, margin 37.6 GiB. Without the distributed
# optimizer it needs 87.5 GiB and does not fit.
#   NNODES=32 NODE_RANK=<0..31> MASTER_ADDR=<node 0> bash examples/pretrain_33b.sh [extra args]
set -euo pipefail
RUN_NAME=${RUN_NAME:-dscoder-33b}
# shellcheck source=examples/_launch.sh
source "$(dirname "$0")/_launch.sh"
model_args=(--model 33b)
parallel_args=(--tensor-model-parallel-size 4 --pipeline-model-parallel-size 2
               --sequence-parallel --use-distributed-optimizer)
train_args=(--micro-batch-size 1)
# Megatron-LM's H100 Llama-3 example switches (the fusions are on by default where TE/apex are):
perf_args=(--overlap-grad-reduce --overlap-param-gather --cross-entropy-loss-fusion --manual-gc)
# TP communication overlap (TE userbuffers, TE spec only) is not in those examples; on H800
# NVLink the TP collectives are an estimated 15-20 % of the step: add --tp-comm-overlap to try.
launch 4 "${model_args[@]}" "${parallel_args[@]}" "${train_args[@]}" "${perf_args[@]}" "$@"
