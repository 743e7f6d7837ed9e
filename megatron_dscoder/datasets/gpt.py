"""Training data: Megatron blends of ``.bin``/``.idx`` prefixes through megatron-core's GPTDataset.

``--data-path`` takes Megatron's syntax, ``PREFIX`` or ``W1 PREFIX1 W2 PREFIX2 ...`` (the paper's
mix is ``87 code 10 english 3 chinese``); ``--split 99,1,0`` divides each prefix's documents into
train/valid/test. Index arrays are built by one rank (megatron-core's builder builds on rank 0,
barriers, then the others read the cache in ``--data-cache-path``).

Every prefix is checked (:func:`megatron_dscoder.data.indexed.check_prefix`) before any
process-group work needs it, and so is every split that will be used (:func:`check_splits`; the
blend and split arithmetic are :mod:`megatron_dscoder.data.blend`): an empty split would
make megatron-core's ``GPTDataset._get_num_epochs`` loop forever. Splits that are not used (test
always, validation without ``--eval-interval``) are never built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from megatron_dscoder.config.run import RunConfig
from megatron_dscoder.config.splits import parse_split
from megatron_dscoder.data.blend import parse_blend, split_bounds, split_tokens
from megatron_dscoder.data.indexed import DataError, read_lengths
from megatron_dscoder.datasets.sft import build_sft

logger = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


def check_splits(data_path: list[str], split: str, evaluate: bool) -> bool:
    """Refuse an empty training split; returns whether validation can run (warns if not)."""
    prefixes, _ = parse_blend(data_path)
    bounds = split_bounds(parse_split(split))
    for prefix in prefixes:
        if split_tokens(prefix, bounds[0]) == 0:
            raise DataError(
                f"--split {split}: the training split of {prefix} is empty "
                f"({len(read_lengths(prefix)[1])} documents in all); give training a share"
            )
    if not evaluate:
        return False
    empty = [p for p in prefixes if split_tokens(p, bounds[1]) == 0]
    if empty:
        logger.warning(
            "--split %s leaves no validation documents in %s: no evaluation will run "
            "(give validation a larger share, or more documents)",
            split,
            ", ".join(empty),
        )
        return False
    return True


def check_bos(data_path: list[str], bos_id: int | None, bos: bool | None) -> bool:
    """The BOS policy of the data: whether its documents start with BOS, read from the first
    document of every prefix. It is recorded in the checkpoint and followed at export and
    generation, so a stated ``--bos``/``--no-bos`` (``bos``; None when not given) must agree,
    and so must every prefix of a blend."""
    prefixes, _ = parse_blend(data_path)
    starts: dict[str, bool] = {}
    for prefix in prefixes:
        header, lengths, _ = read_lengths(prefix)
        if len(lengths) and lengths[0]:
            first = int(np.fromfile(f"{prefix}.bin", dtype=header.dtype, count=1)[0])
            starts[prefix] = bos_id is not None and first == bos_id
    if len(set(starts.values())) > 1:
        with_bos = [p for p, b in starts.items() if b]
        raise DataError(
            f"--data-path mixes prefixes with BOS ({', '.join(with_bos)}) and without; "
            "preprocess them alike (dscoder-preprocess --bos for all or none)"
        )
    found = next(iter(starts.values()), bool(bos))
    if bos is not None and bos != found:
        state = "starts" if found else "does not start"
        raise DataError(
            f"{next(iter(starts))}: its first document {state} with BOS, but "
            f"{'--bos' if bos else '--no-bos'} says otherwise; leave the flag out (the policy "
            "is read from the data)"
        )
    return found


class DatasetTokenizer:
    """The few tokenizer facts megatron-core's GPTDataset needs (ids found by string upstream)."""

    def __init__(self, vocab_size: int, eod: int, pad: int | None, name: str) -> None:
        self.vocab_size, self.eod, self.eos = vocab_size, eod, eod
        self.pad = pad if pad is not None else -1
        self.unique_identifiers = {
            "class": "DatasetTokenizer",
            "name": name,
            "vocab_size": vocab_size,
            "eod": eod,
            "pad": self.pad,
        }


@dataclass(frozen=True)
class DataSpec:
    """What to read and how to split it."""

    data_path: list[str]
    split: str
    seq_length: int
    seed: int
    cache_path: str | None
    tokenizer: DatasetTokenizer
    with_valid: bool = True
    """Build the validation split (False: it is empty or unused, and never built)."""


def build_datasets(spec: DataSpec, sizes: tuple[int, int, int]) -> list:
    """Train/valid/test GPTDatasets of at least ``sizes`` samples (None where a split is empty)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    prefixes, weights = parse_blend(spec.data_path)  # validated by the run's preflight
    config = GPTDatasetConfig(
        random_seed=spec.seed,
        sequence_length=spec.seq_length,
        blend=(prefixes, weights),
        split=spec.split,
        path_to_cache=spec.cache_path,
        tokenizer=spec.tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    # Unused splits are never built: an empty one would loop forever in _get_num_epochs.
    config.split_matrix = [
        config.split_matrix[0],
        config.split_matrix[1] if spec.with_valid else None,
        None,
    ]
    return BlendedMegatronDatasetBuilder(GPTDataset, list(sizes), lambda: True, config).build()


class MicroBatchSampler:
    """This DP rank's micro-batch indices from ``consumed_samples`` on, in Megatron's order.

    Micro-batch ``m`` of an iteration starting at sample ``c`` holds, on DP rank ``r``, samples
    ``c + m * (mbs * dp) + r * mbs + [0, mbs)``: the same global batch whatever the layout, and a
    resumed run continues exactly where the interrupted one stopped.
    """

    def __init__(
        self,
        *,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        dp_rank: int,
        dp_size: int,
    ) -> None:
        self.total, self.start = total_samples, consumed_samples
        self.mbs, self.rank, self.size = micro_batch_size, dp_rank, dp_size

    def __iter__(self) -> Iterator[list[int]]:
        stride = self.mbs * self.size
        for first in range(self.start, self.total - stride + 1, stride):
            base = first + self.rank * self.mbs
            yield list(range(base, base + self.mbs))

    def __len__(self) -> int:
        return max(self.total - self.start, 0) // (self.mbs * self.size)


def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    keys = ("tokens", "labels", "loss_mask", "position_ids")
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in keys}


def loader(dataset, sampler: MicroBatchSampler, num_workers: int | None) -> Iterator[dict]:
    """Iterator of micro-batches; with workers, they prefetch while the step computes."""
    if num_workers is None:
        num_workers = 2 if torch.cuda.is_available() else 0
    if num_workers == 0:  # inline: no DataLoader machinery on the step's critical path
        return (_collate([dataset[i] for i in indices]) for indices in sampler)
    return iter(
        torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            prefetch_factor=4 if num_workers else None,
        )
    )


def build_train_valid(run: RunConfig, with_valid: bool = True) -> tuple:
    """(train, valid) datasets for the run: mock tokens, or the blend through GPTDataset.

    ``with_valid`` False (from :func:`check_splits`) builds no validation set."""
    from megatron_dscoder.datasets.mock import MockTokens

    t, d = run.train, run.data
    if d.mock_data:
        return (
            MockTokens(run.arch.vocab_size, t.seq_length, t.seed),
            MockTokens(run.arch.vocab_size, t.seq_length, t.seed + 1),
        )
    if d.sft:
        valid = with_valid and bool(run.logging.eval_interval)
        return build_sft(d.data_path[0], d.split, t.seq_length, t.seed, valid)
    from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids, vocab_size

    tok = load_tokenizer(d.tokenizer_model)
    ids = special_token_ids(
        tok, require=("eos",), source=d.tokenizer_model, purpose="document separators"
    )
    spec = DataSpec(
        data_path=d.data_path,
        split=d.split,
        seq_length=t.seq_length,
        seed=t.seed,
        cache_path=d.data_cache_path,
        tokenizer=DatasetTokenizer(vocab_size(tok), ids.eos, ids.pad, str(d.tokenizer_model)),
        with_valid=with_valid and bool(run.logging.eval_interval),
    )
    log = run.logging
    evals = (t.train_iters // log.eval_interval + 1) * log.eval_iters if log.eval_interval else 0
    train, valid, _ = build_datasets(
        spec, (t.train_iters * t.global_batch_size, evals * t.global_batch_size, 0)
    )
    return train, valid
