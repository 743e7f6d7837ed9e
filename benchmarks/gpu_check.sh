#!/usr/bin/env bash
# The prepared GPU check: at most 10 minutes on one H100/H200, Transformer Engine not needed.
#   OUT=results/gpu bash benchmarks/gpu_check.sh          # OUT defaults to out/gpu_check
# Steps, each time-boxed (seconds), logs and results under OUT:
#   setup        megatron-core from .whl/ into .site/ when it is not importable (offline)
#   stack        nvidia-smi and the stack's versions (tools/stack_versions.py)
#   launchers    every launcher's torchrun options against this torch and torch 2.10's table
#   activations  bench_activations.py: saved-for-backward bytes on CUDA against the planner
#   mfu          bench_mfu.py: 1.3B, sdpa, no recompute and selective, planner's micro-batch
#   loss_parity  20 fp32 debug-model iterations compared with the CPU reference losses
# STEPS="launchers loss_parity" runs a subset. A failing step does not stop the others; the summary (OUT/summary.tsv) lists each step's exit
# status and seconds, and the script exits 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-out/gpu_check}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-setup stack launchers activations mfu loss_parity}
mkdir -p "${OUT}"
SUMMARY=${OUT}/summary.tsv
printf 'step\tstatus\tseconds\tlimit\n' > "${SUMMARY}"
failed=0

# step NAME LIMIT CMD...: run CMD under `timeout LIMIT`, output to OUT/NAME.log and the console.
step() {
    local name=$1 limit=$2
    shift 2
    case " ${STEPS} " in
        *" ${name} "*) ;;
        *) return 0 ;;
    esac
    local start=${SECONDS}
    echo "== ${name} (at most ${limit} s): $*"
    timeout --kill-after=10 "${limit}" "$@" 2>&1 | tee "${OUT}/${name}.log"
    local rc=${PIPESTATUS[0]}
    local status=ok
    if [ "${rc}" -eq 124 ] || [ "${rc}" -eq 137 ]; then
        status="timed out"
    elif [ "${rc}" -ne 0 ]; then
        status="failed (${rc})"
    fi
    [ "${status}" = ok ] || failed=1
    printf '%s\t%s\t%s\t%s\n' "${name}" "${status}" "$((SECONDS - start))" "${limit}" >> "${SUMMARY}"
}

# megatron-core is carried as a wheel (.whl/, see the GPU notes in docs/gpu.md) when missing.
# shellcheck disable=SC2016  # expanded by the inner shell
step setup 60 bash -c '"$1" -c "import megatron.core" 2>/dev/null && echo "megatron-core present" \
    || "$1" -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl' \
    _ "${PYTHON}"
export PYTHONPATH="${PWD}/.site:${PWD}${PYTHONPATH:+:${PYTHONPATH}}" PYTHONUNBUFFERED=1
# shellcheck disable=SC2016
step stack 30 bash -c 'nvidia-smi -L; "$1" tools/stack_versions.py | tee "$2/stack.txt"' \
    _ "${PYTHON}" "${OUT}"
step launchers 60 "${PYTHON}" benchmarks/check_launcher_options.py \
    --table tests/launchers/torchrun_2.10.json --json "${OUT}/launchers.json"
step activations 140 "${PYTHON}" benchmarks/bench_activations.py --device cuda \
    --json "${OUT}/activations.json"
step mfu 220 "${PYTHON}" benchmarks/bench_mfu.py --model 1.3b --seq-length 4096 \
    --backends sdpa --recompute none selective --num-microbatches 4 --train-iters 6 --warmup 2 \
    --jsonl "${OUT}/mfu.jsonl"
# shellcheck disable=SC2016
step loss_parity 60 bash -c '"$1" benchmarks/debug_loss_parity.py run "$2/debug_fp32.jsonl" \
    && "$1" benchmarks/debug_loss_parity.py compare "$2/debug_fp32.jsonl" \
        --json "$2/loss_parity.json"' _ "${PYTHON}" "${OUT}"

echo "== summary (${SUMMARY})"
column -t -s $'\t' "${SUMMARY}" 2>/dev/null || cat "${SUMMARY}"
exit "${failed}"
