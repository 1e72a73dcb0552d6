"""Near-duplicate detection: MinHash signatures of word 5-grams, LSH banding, union-find.

A document's shingles are its word 5-grams after the paper's normalization (lower-cased
alphanumeric words, `ngrams.words`). Its signature holds, for each of 128 hash functions
(`mix64(shingle ^ seed_k)`), the minimum over its shingles, truncated to 32 bits; the fraction
of equal entries between two signatures estimates the Jaccard similarity of their shingle sets
(standard error <= 0.044 at 128 permutations). Documents of fewer than 5 words have one shingle,
all their words; documents without words have the fixed shingle 0, so they match each other.

Speed: the 128 hash functions are evaluated as one [rows, 128] numpy block per 256 shingles,
in place in two preallocated buffers (about 2 ns per shingle and function here, 0.5 MB of
buffers, so they stay in cache), with a running minimum. splitmix64's first step
x ^ (x >> 30) is linear over GF(2), so for x = shingle ^ seed it is computed once per shingle
and once per seed and the block starts from their XOR. The minimum of a multiset equals that of
its set, so shingles are not made unique first. tests/test_data_minhash_identity.py checks that
signatures are bit-identical to the plain per-function definition above.

Thresholds:
- LSH: 20 bands of 6 rows (120 of the 128 entries). Two documents become candidates when any
  band matches exactly, with probability 1 - (1 - J^6)^20: 0.015 at J=0.3, 0.27 at J=0.5,
  0.92 at J=0.7, 0.998 at J=0.8, 0.99999 at J=0.9.
- A candidate pair is a near duplicate when its estimated Jaccard over all 128 entries is
  >= `threshold` (default 0.8; `Recipe.near_dup_threshold`).
Near duplicates are joined transitively (union-find); each group keeps its first document in
input order and drops the rest, so the result does not depend on hash-bucket order. The band
keys (`band_keys`), the per-bucket pair rule (`bucket_pairs`) and the keep rule (`later_members`)
are shared with the Beam pipeline (`gpt2_jax.data.beam_pipeline`), which finds the same pairs
through a shuffle instead of a sort.

Exact duplicates are removed earlier, by a 128-bit blake2b key of the whitespace-collapsed text
(`clean.exact_key`).

Scale: a signature costs 512 bytes, so dedup of N documents holds 0.5 KB x N plus 160 bytes x N
of band keys (8M OpenWebText documents: about 5 GB). Bands are matched by sorting, not dicts.

References:
  Broder 1997, "On the resemblance and containment of documents" (MinHash).
  Leskovec, Rajaraman, Ullman, Mining of Massive Datasets, ch. 3.4 (banding).
  Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better".
"""

from __future__ import annotations

import numpy as np

from gpt2_jax.data.ngrams import mix64, ngram_hashes, word_bytes, word_hashes

SHINGLE_WORDS = 5
NUM_PERM = 128
BANDS, ROWS = 20, 6
DEFAULT_THRESHOLD = 0.8
_GROUP_CAP = 64  # a bucket bigger than this compares every member with its first 64 only
_SEEDS = mix64(np.arange(NUM_PERM, dtype=np.uint64) + np.uint64(0x5EED))
_MASK32 = np.uint64(0xFFFFFFFF)
_BLOCK_ROWS = 256  # shingles per block: 2 x 256 x 128 x 8 bytes of buffers
# splitmix64's constants (see ngrams.mix64), for the in-place evaluation below
_SHIFT1, _SHIFT2, _SHIFT3 = np.uint64(30), np.uint64(27), np.uint64(31)
_MUL1, _MUL2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SEEDS_STEP1 = _SEEDS ^ (_SEEDS >> _SHIFT1)


def shingles(text: str) -> np.ndarray:
    """uint64[S]: the hashes of `text`'s word 5-grams, in order, repeats kept (S >= 1)."""
    hashes = word_hashes(word_bytes(text))
    out = ngram_hashes(hashes, min(SHINGLE_WORDS, max(len(hashes), 1)))
    if out.size == 0:  # no words at all: one fixed shingle, so such texts match each other
        out = np.zeros(1, dtype=np.uint64)
    return out


def minhash(text: str) -> np.ndarray:
    """uint32[NUM_PERM]: the MinHash signature of `text`'s word 5-gram set: for each seed k, the
    low 32 bits of min over shingles s of mix64(s ^ _SEEDS[k])."""
    s = shingles(text)
    step1 = s ^ (s >> _SHIFT1)  # mix64's first step, shingle half (see the module docstring)
    rows = min(_BLOCK_ROWS, s.size)
    block = np.empty((rows, NUM_PERM), dtype=np.uint64)
    tmp = np.empty_like(block)
    sig = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for lo in range(0, s.size, rows):
        part = step1[lo:lo + rows]
        b, t = block[:part.size], tmp[:part.size]
        np.bitwise_xor(part[:, None], _SEEDS_STEP1[None, :], out=b)  # = x ^ (x >> 30), x = s ^ seed
        b *= _MUL1
        np.right_shift(b, _SHIFT2, out=t)
        b ^= t
        b *= _MUL2
        np.right_shift(b, _SHIFT3, out=t)
        b ^= t  # b = mix64(s ^ seed) for this block's shingles [rows, NUM_PERM]
        np.minimum(sig, np.minimum.reduce(b, axis=0), out=sig)
    return (sig & _MASK32).astype(np.uint32)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """uint64[N, BANDS]: one 64-bit key per LSH band of each signature (uint32[N, NUM_PERM]).
    Row-wise, so a document's keys do not depend on the other documents."""
    keys = np.zeros((len(signatures), BANDS), dtype=np.uint64)
    for band in range(BANDS):
        rows = signatures[:, band * ROWS:(band + 1) * ROWS].astype(np.uint64)
        for r in range(ROWS):
            keys[:, band] = mix64(keys[:, band] * np.uint64(0x100000001B3) + rows[:, r])
    return keys


def bucket_pairs(signatures: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, int]]:
    """The verified pairs of one LSH bucket: positions (j, i), j < i, of members whose estimated
    Jaccard is >= `threshold`. `signatures` is uint32[M, NUM_PERM] of the bucket's members in input
    order. A bucket bigger than _GROUP_CAP compares every member with its first _GROUP_CAP only
    (bounded cost for degenerate buckets, e.g. boilerplate shared by thousands of pages).
    The one rule for every runner (local and Beam), so both find the same pairs."""
    heads = signatures[:_GROUP_CAP]
    sim = (signatures[:, None, :] == heads[None, :, :]).mean(axis=-1)  # [M, H]
    return [(int(j), int(i)) for i, j in zip(*np.nonzero(sim >= threshold)) if j < i]


def later_members(pairs) -> set:
    """Every id that is not the smallest of its connected component under `pairs` (edges of
    comparable ids): the documents near dedup drops, keeping the earliest of each cluster."""
    parent: dict = {}

    def find(x):
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the earliest document stays the root
    return {x for x in parent if find(x) != x}


def near_duplicates(signatures: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """bool[N]: True for each document that is a near duplicate of an earlier one.

    `signatures` is uint32[N, NUM_PERM] in input order."""
    n = len(signatures)
    keys = band_keys(signatures)
    pairs: set[tuple[int, int]] = set()
    for band in range(BANDS):
        order = np.argsort(keys[:, band], kind="stable")  # equal keys stay in input order
        sorted_keys = keys[order, band]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        shared = ends - starts > 1  # buckets with at least two documents
        for lo, hi in zip(starts[shared], ends[shared]):
            members = order[lo:hi]
            pairs.update((int(members[j]), int(members[i])) for j, i in bucket_pairs(signatures[members], threshold))
    drop = np.zeros(n, dtype=bool)
    drop[list(later_members(pairs))] = True
    return drop
