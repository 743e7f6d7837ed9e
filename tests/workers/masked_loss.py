"""Run pretraining layouts on mock data whose samples have very different numbers of loss tokens.

    torchrun --nproc-per-node 2 tests/workers/masked_loss.py OUT_DIR NAME "FLAGS" [...]

Sample ``i`` keeps the loss on only its last ``1 + (37 i mod S)`` positions (the rest masked, as
prompt tokens are in instruction tuning). Each layout writes ``OUT_DIR/NAME.jsonl``. With a
per-token mean over the global batch, the loss and the update cannot depend on how the global
batch is cut into micro-batches and data-parallel ranks; with a mean of per-micro-batch means
(Megatron-LM's default) they do.
"""

import shlex
import sys

from megatron_dscoder.datasets import gpt
from megatron_dscoder.training import train as pretrain

BUILD = gpt.build_train_valid


class MaskedTokens:
    """``dataset`` with most of each sample's loss mask cleared, a different share per sample."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        mask = sample["loss_mask"].clone()  # [s]
        keep = 1 + (37 * index) % mask.numel()
        mask[: mask.numel() - keep] = 0.0
        sample["loss_mask"] = mask
        return sample


def build_masked(run, with_valid: bool = True) -> tuple:
    train, valid = BUILD(run, with_valid)
    return MaskedTokens(train), valid


def main() -> None:
    gpt.build_train_valid = build_masked
    out_dir, pairs = sys.argv[1], sys.argv[2:]
    for name, flags in zip(pairs[::2], pairs[1::2], strict=True):
        argv = shlex.split(flags) + ["--metrics-jsonl", f"{out_dir}/{name}.jsonl"]
        pretrain.main(argv, keep_process_group=True)


if __name__ == "__main__":
    main()
