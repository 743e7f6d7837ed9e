#!/usr/bin/env bash
# Shared by the launchers: cluster variables with defaults, then torchrun of the entry point
# (a child of this shell: SIGTERM is forwarded, and a clean save after it exits 0).
# Sourced, not run. Every variable can be overridden from the environment (or by SLURM, see
# slurm_pretrain.sbatch); extra command-line arguments are passed through to pretrain.
#   NNODES NODE_RANK MASTER_ADDR MASTER_PORT GPUS_PER_NODE   cluster shape
#   DATA_PATH TOKENIZER_MODEL DATA_CACHE_PATH                 data (see preprocess_corpus.sh)
#   CHECKPOINT_DIR TENSORBOARD_DIR WANDB_PROJECT              outputs
#   SHUTDOWN_TIMEOUT    seconds torchrun waits after a SIGTERM before it kills the workers (an
#                       iteration + a save). Passed as TORCH_ELASTIC_SHUTDOWN_TIMEOUT, which
#                       torch >= 2.12 reads; older torchrun has a fixed 30 s (docs/gpu.md).
#   DRY_LAUNCH=1        print the command (shell-quoted, one line; the variables it would get
#                       on stderr) instead of running it
# Only torchrun options that the oldest supported torch (2.10, the Docker image's) knows are
# passed; tests/launchers checks them against that version's parser.
# Under a launcher that already started one process per GPU (torchrun --no-python, Kubeflow
# PyTorchJob, TorchX: LOCAL_RANK and WORLD_SIZE are set), the entry point runs directly.
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
DATA_PATH=${DATA_PATH:-data/code_text_document}
TOKENIZER_MODEL=${TOKENIZER_MODEL:-tokenizer}
DATA_CACHE_PATH=${DATA_CACHE_PATH:-data/cache}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/${RUN_NAME}}
TENSORBOARD_DIR=${TENSORBOARD_DIR:-runs/${RUN_NAME}}
WANDB_PROJECT=${WANDB_PROJECT:-megatron_dscoder}
SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-170}

# run_or_print CMD...: exec the command, or with DRY_LAUNCH=1 print it (stdout) and the
# variables the launcher set for it (stderr), and return.
run_or_print() {
    if [ "${DRY_LAUNCH:-0}" = 1 ]; then
        printf '%q ' "$@"
        printf '\n'
        printf '# env: CUDA_DEVICE_MAX_CONNECTIONS=%s TORCH_ELASTIC_SHUTDOWN_TIMEOUT=%s\n' \
            "${CUDA_DEVICE_MAX_CONNECTIONS:-}" "${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-}" >&2
        return 0
    fi
    exec "$@"
}

# run_torchrun CMD...: run torchrun as a child, forward SIGTERM/SIGINT to it, exit with its status;
# except after a termination signal when the workers saved and exited 0: torchrun then still
# exits 1 (it re-raises the signal), and the launcher exits 0. Rank 0 writes the marker
# (DSCODER_EXIT_MARKER, runtime/exit_marker.py) only when the run returned normally.
run_torchrun() {
    if [ "${DRY_LAUNCH:-0}" = 1 ]; then
        run_or_print "$@"
        return 0
    fi
    local marker status signalled=""
    # No writable TMPDIR: launch anyway, without the marker (torchrun's status is kept).
    marker=$(mktemp "${TMPDIR:-/tmp}/dscoder-exit.XXXXXX" 2>/dev/null) || marker=""
    [ -n "${marker}" ] && rm -f "${marker}"
    DSCODER_EXIT_MARKER=${marker} "$@" &
    local child=$!
    trap 'signalled=TERM; kill -TERM "${child}" 2>/dev/null' TERM
    trap 'signalled=INT; kill -INT "${child}" 2>/dev/null' INT
    status=0
    wait "${child}" || status=$?
    while kill -0 "${child}" 2>/dev/null; do  # a trapped signal interrupts wait: wait again
        status=0
        wait "${child}" || status=$?
    done
    trap - TERM INT
    if [ -n "${signalled}" ] && [ "${status}" != 0 ] && [ -n "${marker}" ] && [ -s "${marker}" ]; then
        echo "launcher: SIG${signalled}: the workers saved a checkpoint at iteration" \
            "$(cat "${marker}") and exited 0; exiting 0 (torchrun exited ${status})" >&2
        status=0
    fi
    [ -n "${marker}" ] && rm -f "${marker}"
    exit "${status}"
}

# launch TP ARG... : torchrun megatron_dscoder.pretrain on this node with the common groups.
launch() {
    local tp=$1
    shift
    local ordered=0 previous="" arg
    [ "${tp}" -gt 1 ] && ordered=1
    for arg in "$@"; do
        if [ "${previous}" = --context-parallel-size ] && [ "${arg}" != 1 ]; then
            ordered=1
        fi
        previous=${arg}
    done
    if [ "${ordered}" = 1 ]; then
        # Hopper/Ampere: TP and CP communication must be issued in order with compute.
        export CUDA_DEVICE_MAX_CONNECTIONS=1
    fi
    # DATA_PATH may be a weighted blend ("87 code 10 english 3 chinese"): split on spaces.
    local data_args
    read -r -a data_args <<< "${DATA_PATH}"
    local common_args=(
        --data-path "${data_args[@]}" --tokenizer-model "${TOKENIZER_MODEL}"
        --data-cache-path "${DATA_CACHE_PATH}" --split "99,1,0"
        --save "${CHECKPOINT_DIR}" --load "${CHECKPOINT_DIR}" --save-interval 1000
        --keep-checkpoints 3 --exit-signal-handler --distributed-timeout-minutes 30
        --log-interval 1 --eval-interval 1000 --eval-iters 10
        --tensorboard-dir "${TENSORBOARD_DIR}"
        --wandb-project "${WANDB_PROJECT}" --wandb-exp-name "${RUN_NAME}"
        --wandb-save-dir "${CHECKPOINT_DIR}"
    )
    if [ -n "${LOCAL_RANK:-}" ] && [ -n "${WORLD_SIZE:-}" ]; then
        # One process per GPU already exists: this is one worker, not the node's launcher.
        run_or_print python -m megatron_dscoder.pretrain "${common_args[@]}" "$@"
        return
    fi
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT}
    local distributed_args=(
        --nproc-per-node "${GPUS_PER_NODE}" --nnodes "${NNODES}" --node-rank "${NODE_RANK}"
        --master-addr "${MASTER_ADDR}" --master-port "${MASTER_PORT}"
    )
    run_torchrun torchrun "${distributed_args[@]}" -m megatron_dscoder.pretrain \
        "${common_args[@]}" "$@"
}
