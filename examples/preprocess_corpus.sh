#!/usr/bin/env bash
# Raw code corpus -> tokenizer -> Megatron .bin/.idx with repository ordering and FIM 0.5.
# One machine with many cores; a 2-core machine handles a ~64 MB corpus in well under a minute.
#   CORPUS="data/raw/*.jsonl.zst" OUT=data bash examples/preprocess_corpus.sh
# Produces OUT/tokenizer/ and OUT/code_text_document.{bin,idx}, the defaults of the launchers
# (DATA_PATH=data/code_text_document TOKENIZER_MODEL=data/tokenizer).
set -euo pipefail
CORPUS=${CORPUS:-data/raw}
OUT=${OUT:-data}
WORKERS=${WORKERS:-$(nproc)}
VOCAB_SIZE=${VOCAB_SIZE:-32000}
SEED=${SEED:-1234}
PYTHON=${PYTHON:-python}
read -r -a inputs <<< "${CORPUS}"
mkdir -p "${OUT}"
if [ ! -f "${OUT}/tokenizer/tokenizer.json" ]; then
    "${PYTHON}" tools/train_tokenizer.py --input "${inputs[@]}" --output "${OUT}/tokenizer" \
        --vocab-size "${VOCAB_SIZE}"
fi
"${PYTHON}" tools/preprocess_data.py --input "${inputs[@]}" \
    --tokenizer-model "${OUT}/tokenizer" --output-prefix "${OUT}/code_text_document" \
    --workers "${WORKERS}" --fim-rate 0.5 --fim-spm-rate 0 --seed "${SEED}" \
    --stats-json "${OUT}/code_text_document.stats.json" "$@"
