#!/usr/bin/env bash
# DeepSeek-Coder-Instruct 6.7B (paper §3.7): the base model fine-tuned on instruction data in
# DeepSeek-Coder-Instruct's template, loss on the responses (and <|EOT|>) only; the recipe
# (--stage sft): peak LR 1e-5, 100 warm-up iterations, cosine decay, ~4M-token batches
# (1024 x 4096), 2B tokens (477 iterations), weights only from the base checkpoint.
# Data first (Alpaca JSON/JSONL or chat JSONL with "messages"):
#   python tools/preprocess_sft.py --input data/instructions.jsonl --tokenizer-model tokenizer \
#       --output-prefix data/sft --stats-json data/sft.json
# Laid out for 2 nodes of 8 x H800 80GB: TP=2 + SP, DP=8, distributed optimizer, micro-batch 1
# (128 micro-batches per DP rank). Planner (--model 6.7b --dry-run --world-size 16 with this
# layout and --global-batch-size 1024): 35.6 GiB per GPU, margin 44.4 GiB, ~25 s per step at
# 45 % MFU (about 3.3 hours for the 477 steps). An interrupted run resumes from its own checkpoints in
# CHECKPOINT_DIR. Export for transformers with the chat template and <|EOT|> as eos:
#   python tools/convert_checkpoint.py to-hf --load checkpoints/dscoder-6.7b-instruct --save hf
#   BASE=checkpoints/dscoder-6.7b NNODES=2 NODE_RANK=<0..1> MASTER_ADDR=<node 0> \
#       bash examples/finetune_instruct_6.7b.sh [extra args]
set -euo pipefail
BASE=${BASE:-checkpoints/dscoder-6.7b}
RUN_NAME=${RUN_NAME:-dscoder-6.7b-instruct}
DATA_PATH=${DATA_PATH:-data/sft}
# shellcheck source=examples/_launch.sh
source "$(dirname "$0")/_launch.sh"
stage_args=(--model 6.7b --stage sft --micro-batch-size 1)
parallel_args=(--tensor-model-parallel-size 2 --sequence-parallel --use-distributed-optimizer)
# Megatron-LM's H100 Llama-3 example switches (the fusions are on by default where TE/apex are):
perf_args=(--overlap-grad-reduce --overlap-param-gather --cross-entropy-loss-fusion --manual-gc)
# The base weights come from BASE; --load below overrides the common one.
launch 2 "${stage_args[@]}" "${parallel_args[@]}" "${perf_args[@]}" "$@" --load "${BASE}"
