"""Instruction-tuning samples: packed sequences whose loss covers only the responses.

Reads the pair written by ``dscoder-preprocess-sft``: ``PREFIX`` (token ids) and ``PREFIX_mask``
(uint8, 1 on response tokens and ``<|EOT|>``). Each epoch shuffles the split's conversations
with ``(seed, epoch)`` and concatenates them into one stream; sample ``i`` is the window
``[i * S, i * S + S + 1)`` of the epochs laid end to end, so it depends only on its index and every
parallel layout sees the same global batch (as with pretraining data).

Packing: conversations share a sequence with causal attention across their boundaries (like
Megatron's pretraining without ``--reset-attention-mask``) and position ids run 0..S-1 over the
whole sequence; every conversation begins with BOS. The loss mask is the mask of the *label*
tokens, so exactly the response tokens and ``<|EOT|>`` are learned, never the prompt, the
system text or the next conversation's BOS. A conversation longer than S continues in the next
sample.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from megatron_dscoder.config.splits import parse_split
from megatron_dscoder.data.blend import split_bounds
from megatron_dscoder.data.indexed import DataError, mask_prefix, read_lengths


def check_sft_prefix(prefix: str) -> None:
    """The mask dataset exists and matches the token dataset document by document."""
    try:
        header, masks, _ = read_lengths(mask_prefix(prefix))
    except (FileNotFoundError, DataError) as err:
        raise DataError(
            f"--stage sft needs {mask_prefix(prefix)}.bin/.idx next to {prefix} "
            f"(made by dscoder-preprocess-sft): {err}"
        ) from None
    _, lengths, _ = read_lengths(prefix)
    if header.dtype != np.uint8 or not np.array_equal(np.asarray(lengths), np.asarray(masks)):
        raise DataError(f"{mask_prefix(prefix)}: not the loss masks of {prefix}")


class PackedSFT(torch.utils.data.Dataset):
    """Sample ``i`` -> ``{"tokens", "labels", "loss_mask", "position_ids"}`` of ``seq_length``."""

    def __init__(self, prefix: str, seq_length: int, seed: int, docs: tuple[int, int]) -> None:
        header, lengths, pointers = read_lengths(prefix)
        self.tokens = np.memmap(f"{prefix}.bin", dtype=header.dtype, mode="r")
        self.masks = np.memmap(f"{mask_prefix(prefix)}.bin", dtype=np.uint8, mode="r")
        self.starts = np.asarray(pointers[docs[0] : docs[1]]) // header.dtype.itemsize
        self.lengths = np.asarray(lengths[docs[0] : docs[1]], dtype=np.int64)
        self.epoch_tokens = int(self.lengths.sum())
        if self.epoch_tokens == 0:
            raise DataError(f"{prefix}: no conversations in documents {docs}")
        self.seq_length, self.seed = seq_length, seed
        self._positions = torch.arange(seq_length, dtype=torch.int64)

    def __len__(self) -> int:
        return 2**31 - 1

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a few epochs' orders, per dataset)
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths))
        return order, np.cumsum(self.lengths[order])

    def _stream(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        tokens, masks = [], []
        while count > 0:
            epoch, offset = divmod(start, self.epoch_tokens)
            order, ends = self._epoch(epoch)
            k = int(np.searchsorted(ends, offset, side="right"))
            doc = order[k]
            within = offset - (int(ends[k]) - int(self.lengths[doc]))
            take = min(count, int(self.lengths[doc]) - within)
            first = int(self.starts[doc]) + within
            tokens.append(self.tokens[first : first + take])
            masks.append(self.masks[first : first + take])
            start, count = start + take, count - take
        return np.concatenate(tokens).astype(np.int64), np.concatenate(masks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tokens, masks = self._stream(index * self.seq_length, self.seq_length + 1)
        text = torch.from_numpy(tokens)
        return {
            "tokens": text[:-1],
            "labels": text[1:],
            "loss_mask": torch.from_numpy(masks[1:].astype(np.float32)),
            "position_ids": self._positions,
        }


def build_sft(prefix: str, split: str, seq_length: int, seed: int, with_valid: bool) -> tuple:
    """(train, valid or None) over the documents of ``--split``'s first two shares."""
    n = len(read_lengths(prefix)[1])
    ranges = [
        (round(b[0] * n), round(b[1] * n)) if b else None for b in split_bounds(parse_split(split))
    ]
    train = PackedSFT(prefix, seq_length, seed, ranges[0])
    valid = PackedSFT(prefix, seq_length, seed + 1, ranges[1]) if with_valid else None
    return train, valid
