"""Stable word n-gram hashes, shared by near-duplicate detection and the overlap analysis.

Text is reduced the way section 4 of the paper reduces it for its overlap Bloom filters:
lower-cased alphanumeric words (Unicode letters and digits; punctuation, underscores and
whitespace are separators). Each word hashes to 64 bits with blake2b (cached, since words
repeat), and an n-gram hashes to a polynomial combination of its word hashes modulo 2^64
followed by the splitmix64 finalizer. The hashes are stable across processes, machines and
runs (Python's own `hash` is salted per process), and two different n-grams collide with
probability about 2^-64.

References:
  Radford et al. 2019, section 4 (8-gram overlap, text normalization).
  Steele, Lea, Flood 2014, "Fast splittable pseudorandom number generators" (splitmix64).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"[^\W_]+")
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for the n-gram polynomial
_CACHE: dict[str, int] = {}
_CACHE_LIMIT = 2_000_000  # words; cleared when full so memory stays bounded


def words(text: str) -> list[str]:
    """The lower-cased alphanumeric words of `text`, in order."""
    return _WORD.findall(text.lower())


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (a bijection that spreads every bit)."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def mix64_int(x: int) -> int:
    """`mix64` on one Python int (for keys and seeds)."""
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def word_hashes(ws: list[str]) -> np.ndarray:
    """uint64[len(ws)]: one stable hash per word."""
    out = np.empty(len(ws), dtype=np.uint64)
    cache = _CACHE
    for i, w in enumerate(ws):
        h = cache.get(w)
        if h is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            h = cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
        out[i] = h
    return out


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """uint64[max(0, len - n + 1)]: the hash of every run of `n` consecutive words."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    for j in range(n):
        h = h * _POLY + hashes[j:j + count]  # wraps modulo 2^64
    return mix64(h)


def text_ngrams(text: str, n: int) -> np.ndarray:
    """The n-gram hashes of `text` after the paper's normalization."""
    return ngram_hashes(word_hashes(words(text)), n)
