#!/usr/bin/env bash
# The 16K context-extension stage (paper §3.6) for any size: RoPE base 100000 with linear
# interpolation x4, sequences of 16384, 1000 iterations at global batch 512, LR held at the
# final pretraining LR, weights from the 4K checkpoint (the recipe: --stage extend-context).
# Laid out for 8 x H800 80GB per node with context parallelism (Transformer Engine) splitting
# each 16K sequence over 2 GPUs; planner figures per GPU (--dry-run --stage extend-context, the
# sdpa build; a dry run needs no --load):
#   1.3b  16 nodes: TP=1, CP=2, DP=64, distributed optimizer         26.8 GiB (margin 53.2)
#   6.7b  16 nodes: TP=2 + SP, CP=2, DP=32, distributed optimizer   44.2 GiB (margin 35.8)
#   33b   32 nodes: TP=4 + SP, PP=2, CP=2, DP=16, distributed opt.   61.5 GiB (margin 18.5)
# An interrupted stage resumes from its own checkpoints in CHECKPOINT_DIR.
#   MODEL=6.7b PRETRAINED=checkpoints/dscoder-6.7b NNODES=16 NODE_RANK=<i> MASTER_ADDR=<node 0> \
#       bash examples/extend_context_16k.sh [extra args]
set -euo pipefail
MODEL=${MODEL:-6.7b}
PRETRAINED=${PRETRAINED:-checkpoints/dscoder-${MODEL}}
RUN_NAME=${RUN_NAME:-dscoder-${MODEL}-16k}
# shellcheck source=examples/_launch.sh
source "$(dirname "$0")/_launch.sh"
case "${MODEL}" in
    1.3b) tp=1; parallel_args=(--context-parallel-size 2) ;;
    6.7b) tp=2; parallel_args=(--tensor-model-parallel-size 2 --sequence-parallel
                               --context-parallel-size 2) ;;
    33b) tp=4; parallel_args=(--tensor-model-parallel-size 4 --pipeline-model-parallel-size 2
                              --sequence-parallel --context-parallel-size 2) ;;
    *) echo "MODEL must be 1.3b, 6.7b or 33b (got ${MODEL})" >&2; exit 2 ;;
esac
stage_args=(--model "${MODEL}" --stage extend-context --use-distributed-optimizer
            --micro-batch-size 1)
# Megatron-LM's H100 Llama-3 example switches (the fusions are on by default where TE/apex are):
perf_args=(--overlap-grad-reduce --overlap-param-gather --cross-entropy-loss-fusion --manual-gc)
# The pretrained weights come from PRETRAINED; --load below overrides the common one.
launch "${tp}" "${stage_args[@]}" "${parallel_args[@]}" "${perf_args[@]}" "$@" \
    --load "${PRETRAINED}"
