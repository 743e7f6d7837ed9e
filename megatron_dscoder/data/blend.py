"""Megatron's blend and split arithmetic over ``.bin``/``.idx`` prefixes, shared by pretraining
data (:mod:`megatron_dscoder.datasets.gpt`) and packed instruction data
(:mod:`megatron_dscoder.datasets.sft`).

``--data-path`` takes Megatron's syntax, ``PREFIX`` or ``W1 PREFIX1 W2 PREFIX2 ...``, or a
manifest of parts (:mod:`.manifest`); ``--split`` shares cut each prefix's documents into
train/valid/test exactly as megatron-core cuts them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from megatron_dscoder.data.indexed import DataError, read_lengths
from megatron_dscoder.data.manifest import blend_from_manifest, is_manifest


def parse_blend(tokens: list[str]) -> tuple[list[str], list[float] | None]:
    """``["a"]`` -> (["a"], None); ``["0.7", "a", "0.3", "b"]`` -> (["a", "b"], [0.7, 0.3]);
    a manifest (``PREFIX.parts/manifest.json``, :mod:`.manifest`), alone or in place of a
    prefix, stands for its parts: alone weighted by their tokens, in a blend sharing its weight
    in proportion to their tokens (``0.3 A 0.7 M`` with parts of 1 and 3 tokens ->
    ``0.3 A 0.175 M/p0 0.525 M/p1``)."""
    if len(tokens) == 1 and is_manifest(tokens[0]):
        return blend_from_manifest(tokens[0])
    if len(tokens) == 1:
        _not_a_directory(tokens[0])
        return tokens, None
    if len(tokens) % 2:
        raise DataError(f"--data-path needs PREFIX or weight/prefix pairs, got {tokens}")
    try:
        weights = [float(w) for w in tokens[::2]]
    except ValueError as err:
        raise DataError(f"--data-path weights must be numbers: {tokens}") from err
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise DataError(f"--data-path weights must be positive and finite: {weights}")
    prefixes: list[str] = []
    shares: list[float] = []
    for weight, prefix in zip(weights, tokens[1::2], strict=True):
        if not is_manifest(prefix):
            _not_a_directory(prefix)
            prefixes.append(prefix)
            shares.append(weight)
            continue
        parts, part_tokens = blend_from_manifest(prefix)
        total = sum(part_tokens)
        prefixes += parts
        shares += [weight * t / total for t in part_tokens]
    return prefixes, shares


def _not_a_directory(prefix: str) -> None:
    """A directory is neither a prefix nor a manifest: say which file to give. A directory
    beside ``PREFIX.bin``/``PREFIX.idx`` is megatron-core's index cache (``PREFIX/cache/``,
    written by the first run without ``--data-cache-path``), so the prefix stands."""
    if os.path.isdir(prefix) and not any(os.path.exists(prefix + s) for s in (".bin", ".idx")):
        manifest = os.path.join(prefix, "manifest.json")
        hint = (
            f"give its manifest, {manifest}"
            if os.path.isfile(manifest)
            else "give PREFIX of PREFIX.bin/PREFIX.idx, or a PREFIX.parts/manifest.json"
        )
        raise DataError(f"--data-path {prefix}: a directory; {hint}")


def split_bounds(shares: Sequence[float]) -> list[tuple[float, float] | None]:
    """Megatron's split matrix: ``(0.99, 0.01, 0)`` -> ``[(0, .99), (.99, 1.0), None]``."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
    )

    return convert_split_vector_to_split_matrix(list(shares))


def split_tokens(prefix: str, bounds: tuple[float, float] | None) -> int:
    """Tokens of ``prefix`` in one split, cut exactly as megatron-core cuts it (by sequence)."""
    if bounds is None:
        return 0
    _, lengths, _ = read_lengths(prefix)
    n = len(lengths)
    beg, end = int(round(bounds[0] * n)), int(round(bounds[1] * n))
    return int(np.asarray(lengths[beg:end], dtype=np.int64).sum())
