#!/usr/bin/env bash
# DeepSeek-Coder-v1.5 7B (paper §5): DeepSeek-LLM-7B-Base continued on 2T tokens of next-token
# prediction (no FIM) at 4K, on the paper's mix: code 70 %, Markdown + StackExchange 10 %,
# code-related NL 7 %, math NL 7 %, Chinese-English NL 6 % (the recipe: --stage
# continue-pretrain; LR 4.2e-4, batch 2304 x 4096, 2000 warm-up and three-stage decay are
# DeepSeek-LLM-7B's own values, assumed: the paper does not give them; each is a flag).
# First import the base model and prepare each part of the mix with its tokenizer, no FIM:
#   python tools/convert_checkpoint.py from-hf --load deepseek-llm-7b-base --save checkpoints/llm7b
#   python tools/preprocess_data.py --input data/raw/code --fim-rate 0 \
#       --tokenizer-model checkpoints/llm7b/iter_0000000/tokenizer --output-prefix data/v15/code
# Planner, 8 x H800 80GB (--model 7b-v1.5 --dry-run --world-size 8 --use-distributed-optimizer):
#   6,910,365,696 parameters (6.91B), padded vocab 102,400, 288 micro-batches per DP rank
#   TP=1, DP=8 (this layout)    65.7 GiB per GPU, margin 14.3 GiB, ~119 s per step at 45 % MFU
#   TP=2 + SP, DP=4             37.7 GiB per GPU, margin 42.3 GiB
# The 211,928 steps of 2T tokens take ~292 days on one node; DP scales with NNODES.
#   BASE=checkpoints/llm7b DATA_DIR=data/v15 NNODES=32 NODE_RANK=<i> MASTER_ADDR=<node 0> \
#       bash examples/continue_v15_7b.sh [extra args]
set -euo pipefail
BASE=${BASE:-checkpoints/llm7b}
RUN_NAME=${RUN_NAME:-dscoder-7b-v1.5}
DATA_DIR=${DATA_DIR:-data/v15}
TOKENIZER_MODEL=${TOKENIZER_MODEL:-${BASE}/iter_0000000/tokenizer}
DATA_PATH=${DATA_PATH:-0.70 ${DATA_DIR}/code 0.10 ${DATA_DIR}/markdown_stackexchange \
0.07 ${DATA_DIR}/code_nl 0.07 ${DATA_DIR}/math_nl 0.06 ${DATA_DIR}/bilingual_nl}
# shellcheck source=examples/_launch.sh
source "$(dirname "$0")/_launch.sh"
stage_args=(--model 7b-v1.5 --stage continue-pretrain --micro-batch-size 1)
parallel_args=(--tensor-model-parallel-size 1 --use-distributed-optimizer)
# The base weights come from BASE; --load below overrides the common one.
launch 1 "${stage_args[@]}" "${parallel_args[@]}" "$@" --load "${BASE}"
