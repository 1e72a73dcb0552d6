"""Stable word n-gram hashes, shared by near-duplicate detection and the overlap analysis.

Text is reduced the way section 4 of the paper reduces it for its overlap Bloom filters:
lower-cased alphanumeric words (Unicode letters and digits; punctuation, underscores and
whitespace are separators; exactly the matches of `[^\\W_]+` in the lower-cased text). Each word
hashes to 64 bits with blake2b of its UTF-8 bytes (cached, since words repeat), and an n-gram
hashes to a polynomial combination of its word hashes modulo 2^64 followed by the splitmix64
finalizer.

Speed: words are cut in bytes, not by the regular expression (which costs ~100 ns a character):
the lower-cased UTF-8 text goes through one `bytes.translate` that turns every ASCII separator
into a space, then each distinct non-ASCII separator character (few per document: quotes,
dashes) is replaced by a space (UTF-8 is self-synchronizing, so a character's byte sequence is
only ever found where that character is), and `split` gives the words. Word hashes are gathered
by one `b"".join` over the cache. tests/test_data_minhash_identity.py checks words, n-gram
hashes and signatures against the regular-expression implementation. The hashes are stable across processes, machines and
runs (Python's own `hash` is salted per process), and two different n-grams collide with
probability about 2^-64.

References:
  Radford et al. 2019, section 4 (8-gram overlap, text normalization).
  Steele, Lea, Flood 2014, "Fast splittable pseudorandom number generators" (splitmix64).
"""

from __future__ import annotations

import hashlib

import numpy as np

_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for the n-gram polynomial
_CACHE: dict[bytes, bytes] = {}  # word (UTF-8) -> its 8-byte blake2b digest
_CACHE_LIMIT = 2_000_000  # words; cleared when full so memory stays bounded
# ASCII letters and digits stay, every other ASCII byte becomes a space; bytes >= 0x80 stay.
_ASCII_SEPARATORS_TO_SPACE = bytes(b if b >= 0x80 or chr(b).isalnum() else 0x20 for b in range(256))
_ASCII = bytes(range(0x80))
_IS_SEPARATOR: dict[str, bool] = {}  # non-ASCII character -> not part of a word ([^\W_] is isalnum)
_UTF8 = ("utf-8", "surrogatepass")  # round-trips any str, lone surrogates included


def word_bytes(text: str) -> list[bytes]:
    """The lower-cased alphanumeric words of `text`, in order, as UTF-8 bytes."""
    data = text.lower().encode(*_UTF8).translate(_ASCII_SEPARATORS_TO_SPACE)
    if not data.isascii():
        for ch in set(data.translate(None, _ASCII).decode(*_UTF8)):  # the distinct non-ASCII characters
            sep = _IS_SEPARATOR.get(ch)
            if sep is None:
                sep = _IS_SEPARATOR[ch] = not ch.isalnum()
            if sep:
                data = data.replace(ch.encode(*_UTF8), b" ")
    return data.split()


def words(text: str) -> list[str]:
    """The lower-cased alphanumeric words of `text`, in order."""
    return [w.decode(*_UTF8) for w in word_bytes(text)]


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


def word_hashes(ws: list[str] | list[bytes]) -> np.ndarray:
    """uint64[len(ws)]: one stable hash per word (str, or its UTF-8 bytes from `word_bytes`):
    the first 8 bytes of its blake2b digest, little-endian."""
    if ws and isinstance(ws[0], str):
        ws = [w.encode(*_UTF8) for w in ws]
    cache = _CACHE
    try:
        joined = b"".join(map(cache.__getitem__, ws))  # one C loop over the words
    except KeyError:
        missing = set(ws).difference(cache)
        if len(cache) + len(missing) > _CACHE_LIMIT:
            cache.clear()
            missing = set(ws)
        for w in missing:
            cache[w] = hashlib.blake2b(w, digest_size=8).digest()
        joined = b"".join(map(cache.__getitem__, ws))
    return np.frombuffer(joined, dtype="<u8").astype(np.uint64)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """uint64[max(0, len - n + 1)]: the hash of every run of `n` consecutive words."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.array(hashes[:count], dtype=np.uint64)
    for j in range(1, n):  # in place; wraps modulo 2^64
        h *= _POLY
        h += hashes[j:j + count]
    return mix64(h)


def text_ngrams(text: str, n: int) -> np.ndarray:
    """The n-gram hashes of `text` after the paper's normalization."""
    return ngram_hashes(word_hashes(word_bytes(text)), n)
