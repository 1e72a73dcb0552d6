"""The vectorized MinHash and the byte-level word splitter give exactly what the plain definitions
give: words = `[^\\W_]+` matches of the lower-cased text, n-gram hashes, and 128-function MinHash
signatures, on real text from tests/data and the package plus empty, short and Unicode edge cases.

Two references: (1) the plain per-function definitions written out below (regular expression,
per-word blake2b, mix64 over the whole [shingles, 128] table), compared array for array; (2) sha256
digests of the outputs of the implementation before vectorization (commit recorded in the JSON
file), so a change to both the code and the reference here cannot pass unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re

import numpy as np
import pytest

from gpt2_jax.data.dedup import NUM_PERM, SHINGLE_WORDS, _SEEDS, minhash
from gpt2_jax.data.ngrams import mix64, ngram_hashes, text_ngrams, word_hashes, words
from _minhash_texts import identity_texts

GOLDEN = pathlib.Path(__file__).parent / "data" / "dedup" / "minhash_identity.json"
_WORD = re.compile(r"[^\W_]+")
_POLY = 0x9E3779B97F4A7C15


def _digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def reference_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def reference_word_hashes(ws: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little") for w in ws],
                    dtype=np.uint64)


def reference_ngrams(hashes: np.ndarray, n: int) -> np.ndarray:
    out = []
    for i in range(len(hashes) - n + 1):  # Python ints, reduced modulo 2^64 by hand
        h = 0
        for j in range(n):
            h = (h * _POLY + int(hashes[i + j])) % 2**64
        out.append(h)
    return mix64(np.array(out, dtype=np.uint64))


def reference_minhash(text: str) -> np.ndarray:
    hashes = reference_word_hashes(reference_words(text))
    shingles = np.unique(reference_ngrams(hashes, min(SHINGLE_WORDS, max(len(hashes), 1))))  # the set
    if shingles.size == 0:
        shingles = np.zeros(1, dtype=np.uint64)
    # one hash function at a time: seed k's minimum over the whole set, low 32 bits
    return np.array([int(mix64(shingles ^ seed).min()) & 0xFFFFFFFF for seed in _SEEDS], dtype=np.uint32)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return identity_texts()


def test_outputs_equal_the_pre_vectorization_implementation(texts):
    golden = json.loads(GOLDEN.read_text())
    assert golden["texts"] == len(texts)
    assert [_digest(minhash(t).astype("<u4").tobytes()) for t in texts] == golden["minhash"]
    assert [_digest(text_ngrams(t, 8).astype("<u8").tobytes()) for t in texts] == golden["ngrams8"]
    assert [_digest(text_ngrams(t, 13).astype("<u8").tobytes()) for t in texts] == golden["ngrams13"]
    assert [_digest("\0".join(words(t)).encode()) for t in texts] == golden["words"]


def test_words_and_hashes_equal_the_plain_definitions(texts):
    for t in texts:
        ws = words(t)
        assert ws == reference_words(t), t[:80]
        np.testing.assert_array_equal(word_hashes(ws), reference_word_hashes(ws))


def test_signatures_equal_the_plain_definition(texts):
    for t in texts:  # the last is tiny Shakespeare whole: ~200k shingles, hundreds of blocks
        np.testing.assert_array_equal(minhash(t), reference_minhash(t), err_msg=t[:80])
    assert len(words(texts[-1])) > 100 * 256
    assert minhash("").shape == (NUM_PERM,) and minhash("").dtype == np.uint32
