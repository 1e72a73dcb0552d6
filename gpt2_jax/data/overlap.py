"""Train/eval overlap, as in section 4 of the paper: 8-gram Bloom filters over the training set.

The training shards are decoded document by document (documents end at `<|endoftext|>`), each
reduced to lower-cased alphanumeric words (the paper's normalization, `ngrams.words`), and every
word 8-gram is added to a Bloom filter. For each evaluation set the report gives the fraction of
its 8-grams (all occurrences, and distinct ones) that the filter contains. 8-grams never span
two documents, on either side.

False positives. The filter is sized for `fpr` (default 1e-8, the paper's bound) at a capacity
of the split's token count, which bounds its number of word 8-grams (a word needs at least one
token of its own), with m = -capacity ln(fpr) / ln(2)^2 bits and k = (m / capacity) ln 2
hashes (Kirsch-Mitzenmacher double hashing of a 64-bit n-gram hash). The report also states the
rate implied by the filled filter, fill^k, which is what a query of an absent 8-gram actually
meets. A Bloom filter has no false negatives: every 8-gram of the training set is found.

Memory: m / 8 bytes, about 4.8 bytes per training token at fpr 1e-8 (1.8 at 1e-3).

References:
  Radford et al. 2019, section 4 and appendix (8-gram Bloom filters, FPR <= 1e-8).
  Kirsch and Mitzenmacher 2006, "Less hashing, same performance: building a better Bloom filter".
"""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np
from tqdm import tqdm

from gpt2_jax.data.errors import CorpusError, ShardError
from gpt2_jax.data.ngrams import mix64, text_ngrams
from gpt2_jax.data.readers import read_corpus
from gpt2_jax.data.shards import read_manifest, read_shard
from gpt2_jax.tokenizer import Tokenizer, load_tokenizer

NGRAM = 8
DEFAULT_FPR = 1e-8


class BloomFilter:
    """A bit array of m bits probed at k positions per 64-bit key."""

    def __init__(self, capacity: int, fpr: float):
        if not 0 < fpr < 1:
            raise ValueError(f"fpr={fpr} must be in (0, 1)")
        capacity = max(1, capacity)
        self.m = max(64, math.ceil(-capacity * math.log(fpr) / math.log(2) ** 2 / 8) * 8)
        self.k = max(1, round(self.m / capacity * math.log(2)))
        self.capacity, self.fpr = capacity, fpr
        self.bits = np.zeros(self.m // 8, dtype=np.uint8)
        self.inserted = 0

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        h1 = np.asarray(keys, dtype=np.uint64)
        h2 = mix64(h1 ^ np.uint64(0xA0761D6478BD642F)) | np.uint64(1)
        probes = np.arange(self.k, dtype=np.uint64)
        return (h1[:, None] + probes[None, :] * h2[:, None]) % np.uint64(self.m)  # [N, k]

    def add(self, keys: np.ndarray) -> None:
        if len(keys):
            pos = self._positions(keys).ravel()
            np.bitwise_or.at(self.bits, pos >> np.uint64(3), (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)))
            self.inserted += len(keys)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if not len(keys):
            return np.zeros(0, dtype=bool)
        pos = self._positions(keys)
        return ((self.bits[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1).all(axis=1).astype(bool)

    def fill(self) -> float:
        ones = sum(int(np.unpackbits(self.bits[i:i + (1 << 24)]).sum()) for i in range(0, self.bits.size, 1 << 24))
        return ones / self.m

    def fpr_estimate(self) -> float:
        """Probability that an absent key is reported present, given the bits set now."""
        return self.fill() ** self.k


def shard_tokenizer(manifest: dict, vocab: str | None = None) -> Tokenizer:
    """The tokenizer that made a shard directory (or `vocab`, which must have its fingerprint)."""
    source = vocab or manifest.get("vocab_source") or manifest["vocab"]
    tok = load_tokenizer(source)
    if manifest.get("vocab_fingerprint") and tok.fingerprint != manifest["vocab_fingerprint"]:
        raise ShardError(f"vocabulary {source!r} has fingerprint {tok.fingerprint} but the shards were made with "
                         f"{manifest['vocab']!r} ({manifest['vocab_fingerprint']}); pass --vocab with that vocabulary")
    return tok


def build_filter(shard_dir: str | os.PathLike, *, split: str = "train", n: int = NGRAM, fpr: float = DEFAULT_FPR,
                 vocab: str | None = None, progress: bool = False) -> BloomFilter:
    """A Bloom filter of every word n-gram of the `split` documents of a shard directory."""
    shard_dir = pathlib.Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise ShardError(f"{str(shard_dir)!r} has no {split!r} split")
    tok = shard_tokenizer(manifest, vocab)
    entry = manifest["splits"][split]
    bloom = BloomFilter(entry["tokens"], fpr)
    bar = tqdm(total=entry["tokens"], desc="bloom", unit="tok", unit_scale=True, disable=not progress, mininterval=1.0)
    for name in entry["shards"]:
        tokens = np.asarray(read_shard(shard_dir / name))
        cuts = np.r_[-1, np.flatnonzero(tokens == manifest["eot_id"]), tokens.size]
        for a, b in zip(cuts[:-1], cuts[1:]):  # one document between separators
            if b > a + 1:
                bloom.add(text_ngrams(tok.decode(tokens[a + 1:b].tolist()), n))
        bar.update(tokens.size)
    bar.close()
    return bloom


def overlap(train_dir: str | os.PathLike, eval_paths: list[str], *, n: int = NGRAM, fpr: float = DEFAULT_FPR,
            format: str = "auto", text_field: str = "text", vocab: str | None = None, progress: bool = False) -> dict:
    """The report: the filter's size and false-positive rates, then one entry per eval set."""
    if not eval_paths:
        raise CorpusError("no evaluation sets given; pass --eval PATH ...")
    bloom = build_filter(train_dir, n=n, fpr=fpr, vocab=vocab, progress=progress)
    report = {"train": str(train_dir), "n": n, "ngrams_inserted": bloom.inserted, "bits": bloom.m, "hashes": bloom.k,
              "fpr_design": fpr, "fpr_estimate": bloom.fpr_estimate(), "eval": []}
    for path in eval_paths:
        per_doc, documents = [], 0
        for doc in read_corpus([path], format, text_field=text_field):
            try:
                text = doc.data.decode("utf-8") if isinstance(doc.data, bytes) else doc.data
            except UnicodeDecodeError as e:
                raise CorpusError(f"{doc.source!r} is not UTF-8 (bad byte at offset {e.start}); convert it to UTF-8") from None
            per_doc.append(text_ngrams(text, n))
            documents += 1
        grams = np.concatenate(per_doc) if per_doc else np.zeros(0, dtype=np.uint64)
        distinct = np.unique(grams)
        found, distinct_found = int(bloom.contains(grams).sum()), int(bloom.contains(distinct).sum())
        report["eval"].append({
            "path": str(path), "documents": documents,
            "ngrams": int(grams.size), "found": found, "fraction": found / grams.size if grams.size else 0.0,
            "distinct_ngrams": int(distinct.size), "distinct_found": distinct_found,
            "distinct_fraction": distinct_found / distinct.size if distinct.size else 0.0,
        })
    return report


def format_overlap(report: dict) -> str:
    lines = [f"train {report['train']}: {report['ngrams_inserted']:,} word {report['n']}-grams in a Bloom filter of "
             f"{report['bits']:,} bits, {report['hashes']} hashes; false-positive rate <= {report['fpr_design']:.0e} "
             f"by design, {report['fpr_estimate']:.2e} at its fill",
             f"{'eval set':<40} {'docs':>6} {report['n']}-grams {'in train':>9} {'distinct':>10} {'in train':>9}"]
    for e in report["eval"]:
        lines.append(f"{e['path'][-40:]:<40} {e['documents']:>6} {e['ngrams']:>7,} {100 * e['fraction']:>8.2f}% "
                     f"{e['distinct_ngrams']:>10,} {100 * e['distinct_fraction']:>8.2f}%")
    return "\n".join(lines)
