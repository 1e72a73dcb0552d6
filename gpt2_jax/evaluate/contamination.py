"""Train/test overlap per task (the paper's section 4): `gpt2-jax eval --overlap SHARDS_DIR`.

The training split of a shard directory goes into the project's 8-gram Bloom filter
(`gpt2_jax.data.overlap.build_filter`: lower-cased alphanumeric words, false-positive rate
<= 1e-8). Each task then flags every example (a document, a LAMBADA passage, a CBT/WSC example)
whose text has at least one 8-gram in the filter, and reports next to its metrics:
  ngrams, found, fraction   the share of the test set's 8-grams found in the training data
                            (Table 6's number);
  overlapping, clean        the task's metrics on the flagged and on the other examples, as in
                            the paper's LAMBADA analysis.

References:
  Radford et al. 2019, section 4 and Table 6.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpt2_jax.data.ngrams import text_ngrams
from gpt2_jax.data.overlap import NGRAM, BloomFilter, build_filter


@dataclasses.dataclass
class Overlap:
    bloom: BloomFilter
    source: str
    n: int = NGRAM
    ngrams: int = 0
    found: int = 0

    def flag(self, text: str) -> bool:
        """Counts the text's n-grams and says whether any of them is in the training data."""
        grams = text_ngrams(text, self.n)
        hits = int(np.count_nonzero(self.bloom.contains(grams)))
        self.ngrams += int(grams.size)
        self.found += hits
        return hits > 0

    def section(self, overlapping: dict, clean: dict) -> dict:
        return {"train": self.source, "ngrams": self.ngrams, "found": self.found,
                "fraction": self.found / self.ngrams if self.ngrams else 0.0,
                "overlapping": overlapping, "clean": clean}

    def reset(self) -> None:
        self.ngrams = self.found = 0


def load(shards_dir: str, progress: bool = True) -> Overlap:
    return Overlap(build_filter(shards_dir, progress=progress), str(shards_dir))
