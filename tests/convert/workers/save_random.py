"""Save random-weight debug checkpoints at several layouts in one torchrun launch.

    torchrun --nproc-per-node 2 tests/convert/workers/save_random.py OUT TOKENIZER \
        NAME:TP:PP:MHA:EXT ...

Each case builds the real ``GPTModel`` for its layout, initialises it layout-independently from
seed 1234 (so every layout holds the same full weights) and saves it with the training loop's
``checkpointing.save_checkpoint``. TP=1, PP=1 in a world of 2 is data parallelism (one replica
saved). megatron-core's groups are rebuilt per case; the default process group is kept.
"""

import os
import sys
from pathlib import Path

# Heavy imports live inside the functions: megatron-core's checkpoint writer spawns a helper
# process that re-imports this module, and should not pay for torch and megatron again.

SEED = 1234


def save_case(out: Path, tokenizer: str, spec: str) -> None:
    import dataclasses

    from megatron.core import parallel_state

    from megatron_dscoder.checkpointing import checkpoint as checkpointing
    from megatron_dscoder.config.run import ParallelConfig
    from megatron_dscoder.model.build import build_model, transformer_config
    from megatron_dscoder.model.weight_init import initialize_model
    from megatron_dscoder.parallel import distributed
    from megatron_dscoder.tokenizer import load_tokenizer, vocab_size
    from tests.convert.helpers import debug_arch

    name, tp, pp, mha, ext = spec.split(":")
    tp, pp = int(tp), int(pp)
    arch = debug_arch(mha == "1", vocab_size(load_tokenizer(tokenizer)), extended=ext == "1")
    distributed.initialize(
        ParallelConfig(
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            world_size=int(os.environ["WORLD_SIZE"]),
        ),
        SEED,
    )
    try:
        model = build_model(
            arch,
            transformer_config(
                arch, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp
            ),
        )
        initialize_model(
            model,
            SEED,
            init_method_std=arch.init_method_std,
            num_layers=arch.num_layers,
            tp_rank=parallel_state.get_tensor_model_parallel_rank(),
            tp_size=tp,
        )
        checkpointing.save_checkpoint(
            out / name,
            iteration=7,
            model=[model],
            optimizer=None,
            run_meta={"model": None, "arch": dataclasses.asdict(arch), "tokenizer": tokenizer},
        )
    finally:
        distributed.destroy(keep_process_group=True)


def main() -> None:
    import torch

    out, tokenizer, specs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    for spec in specs:
        save_case(out, tokenizer, spec)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
