"""Vectorised word n-grams, MinHash signatures and LSH band keys for a partition of texts.

Everything here works on a whole partition at once (all texts of one task joined), with numpy
ops over bytes, tokens and n-grams: no Python loop per word or per shingle.

**Gram unit.** A *word* is a maximal run of ASCII letters, digits and ``_`` or of non-ASCII
characters, after ASCII lower-casing; everything else (whitespace, punctuation, operators)
only separates words. This is BigCode's near-dedup unit (``[^A-Za-z_0-9]`` split of the
lower-cased text) extended to non-ASCII scripts. Dropping punctuation and case makes shingles
robust to formatting and keeps them about one identifier or keyword long, so a 5-gram spans a
meaningful piece of code (``def parse_args argv none``) rather than a few symbols. The same
unit serves decontamination (:mod:`.decontam`).

**Hashing.** Word hashes are polynomial prefix hashes over the bytes (mod 2^64, computed with
cumulative sums over 256 KiB chunks cut at whitespace), finished with the splitmix64 mixer;
an n-gram hash mixes n consecutive word hashes with fixed odd multipliers. All constants are
fixed, so a text has the same grams in every process, engine and run.

**Signatures.** ``num_perm`` values per text by one-permutation hashing (Li et al. 2012): each
shingle hash picks one of ``num_perm`` bins with its high bits and competes for that bin's
minimum with its low 32 bits; empty bins are filled by optimal densification (Shrivastava
2017: probe other bins in a fixed pseudo-random order shared by all texts, rotation as the last
resort). Two texts agree in a signature position with probability equal to their Jaccard
similarity, as with ``num_perm`` independent permutations, at O(shingles) cost instead of
O(num_perm x shingles). ``scheme="kperm"`` computes the classic ``num_perm`` independent
multiply-shift permutations instead (slower; kept for comparison).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from megatron_dscoder.preprocess.config import MinHashConfig
from megatron_dscoder.preprocess.stages.base import Batch, WorkerContext
from megatron_dscoder.preprocess.stats import PartitionStats

EMPTY = np.uint32(0xFFFFFFFF)
_CHUNK = 1 << 18
_P = 0x100000001B3  # odd: invertible mod 2^64
_M64 = (1 << 64) - 1
_GRAM_MULT = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3,
     0x1D8E4E27C47D124F, 0xEB44ACCAB455D165, 0x9FB21C651E98DF25, 0xF1357AEA2E62A9C5],
    dtype=np.uint64,
)  # fmt: skip


def band_layout(config: MinHashConfig) -> tuple[int, int]:
    """(bands, rows): the given ones, else the layout chosen from the threshold and num_perm."""
    if config.bands and config.rows:
        return config.bands, config.rows
    return optimal_bands(config.threshold, config.num_perm, 0.95 if config.verify else 0.5)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(P^i, P^-i) for i < 256 KiB, byte -> lower-cased value + 1, byte -> is-word-byte."""
    powers = np.full(_CHUNK, _P, dtype=np.uint64)
    powers[0] = 1
    np.cumprod(powers, out=powers)
    inverse = np.full(_CHUNK, pow(_P, -1, 1 << 64), dtype=np.uint64)
    inverse[0] = 1
    np.cumprod(inverse, out=inverse)
    lower = np.arange(256, dtype=np.uint64)
    lower[ord("A") : ord("Z") + 1] += 32
    word = np.zeros(256, dtype=bool)
    for lo, hi in (("a", "z"), ("A", "Z"), ("0", "9")):
        word[ord(lo) : ord(hi) + 1] = True
    word[ord("_")] = True
    word[128:] = True
    return powers, inverse, lower + 1, word


def word_hashes(
    texts: list[str], informative: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word, index of its text), in text order; see the module docstring.

    With ``informative`` (a list), one boolean array is appended to it: which words have at
    least 3 bytes and do not start with a digit.
    """
    powers, inverse, values, is_word = _tables()
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    buf = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)
    starts_of_text = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]], dtype=np.int64)
    word = is_word[buf]
    hashes, positions, sizes = [], [], []
    begin = 0
    while begin < buf.size:
        end = min(begin + _CHUNK, buf.size)
        if end < buf.size:  # cut at a separator so that no word is split (if there is one)
            separators = np.flatnonzero(~word[begin + _CHUNK // 2 : end])
            if separators.size:
                end = begin + _CHUNK // 2 + int(separators[-1]) + 1
        w = word[begin:end]
        edges = np.diff(w.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        prefix = np.zeros(end - begin + 1, dtype=np.uint64)
        np.cumsum(values[buf[begin:end]] * powers[: end - begin], out=prefix[1:])
        hashes.append(_mix((prefix[last] - prefix[first]) * inverse[first]))
        positions.append(first + begin)
        sizes.append(last - first)
        begin = end
    if informative is not None:
        starts = np.concatenate(positions) if positions else np.empty(0, np.int64)
        long = np.concatenate(sizes) >= 3 if sizes else np.empty(0, bool)
        informative.append(long & ((buf[starts] < ord("0")) | (buf[starts] > ord("9"))))
    if not hashes:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    pos = np.concatenate(positions)
    return np.concatenate(hashes), np.searchsorted(starts_of_text, pos, side="right") - 1


def ngram_hashes(
    words: np.ndarray, text_of: np.ndarray, n: int, short: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every n-gram of consecutive words within one text, its text index).

    With ``short``, a text of 1..n-1 words yields one gram of all its words (so that tiny
    texts still have a shingle); otherwise it yields none.
    """
    count = words.size - n + 1
    if count > 0:
        acc = words[:count] * _GRAM_MULT[0]
        for j in range(1, n):
            acc += words[j : j + count] * _GRAM_MULT[j % _GRAM_MULT.size]
        valid = text_of[:count] == text_of[n - 1 :]
        grams, owners = _mix(acc[valid] + np.uint64(n)), text_of[:count][valid]
    else:
        grams, owners = np.empty(0, np.uint64), np.empty(0, np.int64)
    if not short or words.size == 0:
        return grams, owners
    first = np.flatnonzero(np.diff(text_of, prepend=-1))  # text_of is non-decreasing
    sizes = np.diff(first, append=text_of.size)
    extra_g, extra_o = [], []
    for f, s in zip(first[sizes < n].tolist(), sizes[sizes < n].tolist(), strict=True):
        acc = (words[f : f + s] * _GRAM_MULT[:s]).sum(dtype=np.uint64) + np.uint64(s)
        extra_g.append(_mix(np.array([acc], dtype=np.uint64))[0])
        extra_o.append(int(text_of[f]))
    if extra_g:
        grams = np.concatenate([grams, np.array(extra_g, dtype=np.uint64)])
        owners = np.concatenate([owners, np.array(extra_o, dtype=np.int64)])
    return grams, owners


@cache
def _probes(num_perm: int, rounds: int) -> np.ndarray:
    """probes[i, a]: the bin an empty bin i looks at on attempt a (same for every text)."""
    rng = np.random.Generator(np.random.PCG64(0x5EED))
    return rng.integers(0, num_perm, size=(num_perm, rounds), dtype=np.int64)


def oph_signatures(grams: np.ndarray, owners: np.ndarray, count: int, num_perm: int) -> np.ndarray:
    """(count, num_perm) uint32 signatures; rows of texts without grams stay all EMPTY."""
    sig = np.full(count * num_perm, EMPTY, dtype=np.uint32)
    bins = ((grams >> np.uint64(32)) * np.uint64(num_perm)) >> np.uint64(32)
    np.minimum.at(sig, owners * num_perm + bins.astype(np.int64), grams.astype(np.uint32))
    sig = sig.reshape(count, num_perm)
    filled = sig != EMPTY
    rows = filled.any(axis=1)
    empty_r, empty_c = np.nonzero(~filled & rows[:, None])
    probes = _probes(num_perm, 64)
    for attempt in range(probes.shape[1]):
        if empty_r.size == 0:
            break
        source = probes[empty_c, attempt]
        hit = filled[empty_r, source]
        sig[empty_r[hit], empty_c[hit]] = sig[empty_r[hit], source[hit]]
        empty_r, empty_c = empty_r[~hit], empty_c[~hit]
    for offset in range(1, num_perm):  # rotation for the rare leftovers (texts of few grams)
        if empty_r.size == 0:
            break
        source = (empty_c + offset) % num_perm
        hit = filled[empty_r, source]
        sig[empty_r[hit], empty_c[hit]] = sig[empty_r[hit], source[hit]] + np.uint32(offset)
        empty_r, empty_c = empty_r[~hit], empty_c[~hit]
    return sig


def kperm_signatures(
    grams: np.ndarray, owners: np.ndarray, count: int, num_perm: int
) -> np.ndarray:
    """Classic MinHash: ``num_perm`` multiply-shift permutations (O(grams x num_perm))."""
    rng = np.random.Generator(np.random.PCG64(0xC0DE))
    a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    sig = np.full((count, num_perm), EMPTY, dtype=np.uint32)
    order = np.argsort(owners, kind="stable")
    grams, owners = grams[order], owners[order]
    step = max(1, (1 << 22) // num_perm)
    for start in range(0, grams.size, step):
        g, o = grams[start : start + step], owners[start : start + step]
        values = ((g[:, None] * a + b) >> np.uint64(32)).astype(np.uint32)
        heads = np.flatnonzero(np.diff(o, prepend=-1))
        reduced = np.minimum.reduceat(values, heads, axis=0)
        sig[o[heads]] = np.minimum(sig[o[heads]], reduced)
    return sig


def signatures(texts: list[str], config: MinHashConfig) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures of the texts' word n-grams."""
    words, text_of = word_hashes(texts)
    return signatures_of_words(words, text_of, len(texts), config)


def signatures_of_words(
    words: np.ndarray, text_of: np.ndarray, count: int, config: MinHashConfig
) -> np.ndarray:
    """:func:`signatures` from the output of :func:`word_hashes` (shared with decontamination)."""
    grams, owners = ngram_hashes(words, text_of, config.ngram)
    fn = kperm_signatures if config.scheme == "kperm" else oph_signatures
    return fn(grams, owners, count, config.num_perm)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: a hash of (band index, the band's ``rows`` values)."""
    n = sig.shape[0]
    values = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    acc = np.broadcast_to(np.arange(bands, dtype=np.uint64) * _GRAM_MULT[-1], (n, bands)).copy()
    for j in range(rows):
        acc = _mix(acc + values[:, :, j] * _GRAM_MULT[j % _GRAM_MULT.size])
    return acc


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(two texts of Jaccard ``s`` share at least one band)."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


@cache
def optimal_bands(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted areas of false positives below ``threshold`` and
    false negatives above it (the rule of BigCode and datasketch)."""
    grid_lo = np.linspace(0.0, threshold, 201)
    grid_hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, num_perm), math.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(grid_lo, bands, rows), grid_lo)
            fn = np.trapezoid(1.0 - candidate_probability(grid_hi, bands, rows), grid_hi)
            err = (1.0 - fn_weight) * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (bands, rows), err
    return best


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of equal positions of paired signature rows (the MinHash estimate)."""
    return (a == b).mean(axis=-1)


def exact_jaccard(x: str, y: str, ngram: int = 5) -> float:
    """Exact Jaccard of two texts' word n-gram sets (for tests and benchmarks)."""
    sets = []
    for text in (x, y):
        words, owner = word_hashes([text])
        sets.append(set(ngram_hashes(words, owner, ngram)[0].tolist()))
    union = len(sets[0] | sets[1])
    return len(sets[0] & sets[1]) / union if union else 1.0


def word_hashes_stage(batch: Batch, ctx: WorkerContext, stats: PartitionStats) -> Batch:
    """The sample stage hashing the words once for decontamination and
    MinHash."""
    if batch.samples:
        batch.words, batch.text_of = word_hashes([s.text for s in batch.samples])
    return batch


def minhash_stage(batch: Batch, ctx: WorkerContext, stats: PartitionStats) -> Batch:
    """The sample stage: one signature per sample, for the near-dedup
    (:mod:`megatron_dscoder.preprocess.dedup`)."""
    if batch.words is not None:
        assert ctx.options.dedup is not None  # the stage runs only when dedup is on
        batch.signatures = signatures_of_words(
            batch.words, batch.text_of, len(batch.samples), ctx.options.dedup
        )
    return batch
