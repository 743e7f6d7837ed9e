"""Deterministic synthetic token data (``--mock-data``): sample ``i`` is a function of (seed, i).

Each sample repeats a short Zipf-distributed phrase, so a model can learn both token frequencies
and in-context copying: the loss falls visibly within a few dozen CPU iterations. Because a sample
depends only on its global index, every parallel layout sees exactly the same global batch.
"""

from __future__ import annotations

import numpy as np
import torch


class MockTokens(torch.utils.data.Dataset):
    """Sample ``i`` -> ``{"tokens", "labels", "loss_mask", "position_ids"}`` of ``seq_length``."""

    def __init__(self, vocab_size: int, seq_length: int, seed: int) -> None:
        self.vocab_size, self.seq_length, self.seed = vocab_size, seq_length, seed
        ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
        self._zipf_cdf = np.cumsum(1.0 / ranks) / np.sum(1.0 / ranks)
        self._loss_mask = torch.ones(seq_length, dtype=torch.float32)
        self._positions = torch.arange(seq_length, dtype=torch.int64)

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])  # a stream per (seed, sample)
        period = int(rng.integers(8, 33))
        phrase = np.searchsorted(self._zipf_cdf, rng.random(period), side="right")
        phrase = np.minimum(phrase, self.vocab_size - 1)
        text = torch.from_numpy(np.resize(phrase, self.seq_length + 1).astype(np.int64))
        return {
            "tokens": text[:-1],
            "labels": text[1:],
            "loss_mask": self._loss_mask,
            "position_ids": self._positions,
        }
