"""Near-duplicate detection: MinHash signatures of word 5-grams, LSH banding, union-find.

A document's shingles are its word 5-grams after the paper's normalization (lower-cased
alphanumeric words, `ngrams.words`). Its signature holds, for each of 128 hash functions
(`mix64(shingle ^ seed_k)`), the minimum over its shingles, truncated to 32 bits; the fraction
of equal entries between two signatures estimates the Jaccard similarity of their shingle sets
(standard error <= 0.044 at 128 permutations).

Thresholds:
- LSH: 20 bands of 6 rows (120 of the 128 entries). Two documents become candidates when any
  band matches exactly, with probability 1 - (1 - J^6)^20: 0.015 at J=0.3, 0.27 at J=0.5,
  0.92 at J=0.7, 0.998 at J=0.8, 0.99999 at J=0.9.
- A candidate pair is a near duplicate when its estimated Jaccard over all 128 entries is
  >= `threshold` (default 0.8; `Recipe.near_dup_threshold`).
Near duplicates are joined transitively (union-find); each group keeps its first document in
input order and drops the rest, so the result does not depend on hash-bucket order.

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

from gpt2_jax.data.ngrams import mix64, ngram_hashes, word_hashes, words

SHINGLE_WORDS = 5
NUM_PERM = 128
BANDS, ROWS = 20, 6
DEFAULT_THRESHOLD = 0.8
_GROUP_CAP = 64  # a bucket bigger than this compares every member with its first 64 only
_SEEDS = mix64(np.arange(NUM_PERM, dtype=np.uint64) + np.uint64(0x5EED))
_MASK32 = np.uint64(0xFFFFFFFF)


def minhash(text: str) -> np.ndarray:
    """uint32[NUM_PERM]: the MinHash signature of `text`'s word 5-gram set."""
    hashes = word_hashes(words(text))
    shingles = np.unique(ngram_hashes(hashes, min(SHINGLE_WORDS, max(len(hashes), 1))))
    if shingles.size == 0:  # no words at all: one fixed shingle, so such texts match each other
        shingles = np.zeros(1, dtype=np.uint64)
    sig = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for lo in range(0, shingles.size, 4096):  # bounded temporaries for very long documents
        block = mix64(shingles[lo:lo + 4096, None] ^ _SEEDS[None, :])  # [S, P]
        np.minimum(sig, block.min(axis=0), out=sig)
    return (sig & _MASK32).astype(np.uint32)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def near_duplicates(signatures: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """bool[N]: True for each document that is a near duplicate of an earlier one.

    `signatures` is uint32[N, NUM_PERM] in input order."""
    n = len(signatures)
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    checked: set[tuple[int, int]] = set()
    for band in range(BANDS):
        rows = signatures[:, band * ROWS:(band + 1) * ROWS].astype(np.uint64)
        keys = np.zeros(n, dtype=np.uint64)
        for r in range(ROWS):
            keys = mix64(keys * np.uint64(0x100000001B3) + rows[:, r])
        order = np.argsort(keys, kind="stable")  # equal keys stay in input order
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        shared = ends - starts > 1  # buckets with at least two documents
        for lo, hi in zip(starts[shared], ends[shared]):
            members = order[lo:hi]
            heads = members[:_GROUP_CAP]
            sim = (signatures[members][:, None, :] == signatures[heads][None, :, :]).mean(axis=-1)  # [M, H]
            for i, j in zip(*np.nonzero(sim >= threshold)):
                a, b = int(heads[j]), int(members[i])
                if a >= b or (a, b) in checked:
                    continue
                checked.add((a, b))
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)  # the earliest document stays the root
    return np.array([find(i) != i for i in range(n)], dtype=bool)
