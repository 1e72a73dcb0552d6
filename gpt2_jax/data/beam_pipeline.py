"""The WebText recipe as an Apache Beam pipeline graph: the same documents in the same shards as `data prepare`.

Every stage reuses the local path's code (`readers.read_unit`, `clean.clean_document`, the shared
LSH rules of `dedup`, the tokenizer, `shards.write_shard`); only the plumbing differs. Order,
keep rules and shard boundaries come from the data, never from worker scheduling: each document
carries its order key (index of its file in `readers.read_units`, index within the file), which is
the local path's input order.

Stages (each `|` below crosses a shuffle the runner may distribute):
1. read: one element per file | Reshuffle | documents (a file is read by one worker; many files
   spread, one huge file does not) | Reshuffle | clean (stages 1-4 of `gpt2_jax.data.clean`).
2. exact dedup: GroupByKey on the content hash; the document with the smallest order key stays.
3. near dedup: each survivor's 20 LSH band keys | GroupByKey per (band, key) | `dedup.bucket_pairs`
   over the bucket's members in order (the local 64-member cap included) | all verified pairs in
   one place | `dedup.later_members` (connected components; the earliest document of each stays).
4. shard boundaries: the local path cuts a split's exact-dedup survivors, in input order, into
   chunks of `shard_bytes` of text before near dedup drops any (so a shard's boundaries do not
   move when the dedup threshold does). Here (split, order, bytes) of every survivor is collected
   in one place, sorted, and cut the same way; only the chunk start keys travel on.
5. tokenize: GroupByKey per chunk; each chunk's kept documents in order become one shard, written
   under the staging directory by whichever worker holds it.
The run ends with one summary (counts, shard records, errors) that the driver
(`gpt2_jax.data.beam_prepare`) turns into the manifest.

Scaling: steps 3's components and 4's boundaries run in one worker over small records (a pair of
order keys per verified near duplicate; 32 bytes per surviving document: about 250 MB for 8M
OpenWebText documents). Everything heavy (reading, cleaning, MinHash, band shuffles, tokenization)
is spread. Beyond ~10^8 documents the two global steps would need distributed versions (label
propagation for components, a sampled range partition for boundaries).

User errors inside workers (bad JSON, non-UTF-8 with invalid_utf8=error, an unreadable archive)
are not raised there: they travel as data with their order key, and the driver raises the earliest
one, the same `CorpusError` the local path raises first.

References:
  Apache Beam programming guide: GroupByKey, CombineGlobally, side inputs, Reshuffle.
  Leskovec, Rajaraman, Ullman, Mining of Massive Datasets, ch. 3.4 (LSH banding).
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from gpt2_jax.data.clean import Recipe, clean_document, is_validation
from gpt2_jax.data.dedup import band_keys, bucket_pairs, later_members
from gpt2_jax.data.errors import CorpusError
from gpt2_jax.data.readers import ReadUnit, read_unit
from gpt2_jax.data.shards import shard_sha256, write_shard

ERRORS = "errors"
COUNTS = "counts"


def build(p: beam.Pipeline, units: list[ReadUnit], read_options: dict, recipe: Recipe, vocab, shard_bytes: int,
          staging: str) -> None:
    """Adds the recipe to `p`; the run writes shards and `summary.json` under `staging`."""
    read = (p | "units" >> beam.Create(list(enumerate(units)))
            | "spread units" >> beam.Reshuffle()
            | "read" >> beam.ParDo(_Read(read_options)).with_outputs(ERRORS, main="docs"))
    cleaned = (read.docs | "spread docs" >> beam.Reshuffle()
               | "clean" >> beam.ParDo(_Clean(recipe)).with_outputs(ERRORS, COUNTS, main="kept"))
    survivors, counts = cleaned.kept, [cleaned[COUNTS]]
    if recipe.exact_dedup:
        exact = (survivors | "by content hash" >> beam.Map(lambda d: (d[1], d))
                 | "group equal texts" >> beam.GroupByKey()
                 | "keep earliest" >> beam.ParDo(_Earliest()).with_outputs(COUNTS, main="kept"))
        survivors = exact.kept
        counts.append(exact[COUNTS])
    if recipe.near_dedup:
        pairs = (survivors | "band keys" >> beam.FlatMap(_bands)
                 | "group buckets" >> beam.GroupByKey()
                 | "verify buckets" >> beam.FlatMap(_verified_pairs, recipe.near_dup_threshold))
        drops = (pairs | "all pairs" >> beam.combiners.ToList()
                 | "components" >> beam.Map(lambda ps: frozenset(later_members(ps))))
    else:
        drops = p | "no drops" >> beam.Create([frozenset()])
    split_of = _SplitOf(recipe)
    starts = (survivors | "sizes" >> beam.Map(lambda d: (split_of(d[1]), d[0], len(d[2].encode("utf-8"))))
              | "all sizes" >> beam.combiners.ToList()
              | "cut chunks" >> beam.Map(_chunk_starts, shard_bytes))
    infos = (survivors | "assign chunk" >> beam.Map(_assign, split_of, beam.pvalue.AsSingleton(starts))
             | "group chunks" >> beam.GroupByKey()
             | "tokenize" >> beam.ParDo(_Tokenize(vocab, staging), beam.pvalue.AsSingleton(drops)))
    errors = (read[ERRORS], cleaned[ERRORS]) | "all errors" >> beam.Flatten()
    total = counts | "all counts" >> beam.Flatten() | "sum counts" >> beam.CombineGlobally(_SumCounts())
    _ = (p | "one summary" >> beam.Create([None])
         | "summary" >> beam.Map(_write_summary, staging, beam.pvalue.AsList(errors), beam.pvalue.AsSingleton(total),
                                 beam.pvalue.AsList(infos), beam.pvalue.AsSingleton(drops)))


# ----------------------------------------------------------------------------------------------
# stages (module-level so the runner pickles them by reference)


class _Read(beam.DoFn):
    def __init__(self, read_options: dict):
        self.read_options = read_options

    def process(self, item):
        index, unit = item
        count = 0
        try:
            for doc in read_unit(unit, **self.read_options, opener=FileSystems.open):
                yield (index, count), doc
                count += 1
        except CorpusError as e:  # the driver raises the earliest error (this one follows the file's read documents)
            yield beam.pvalue.TaggedOutput(ERRORS, ((index, count), str(e)))


class _Clean(beam.DoFn):
    """Stages 1-4 per document; a survivor becomes (order, key, text, signature)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def process(self, item):
        order, doc = item
        try:
            c = clean_document(doc, self.recipe)
        except CorpusError as e:
            yield beam.pvalue.TaggedOutput(ERRORS, (order, str(e)))
            return
        counts = {"read": 1, "bytes_read": c.n_bytes, **{f"norm:{k}": v for k, v in (c.normalization or {}).items() if v}}
        if c.reason:
            counts[f"drop:{c.reason}"] = 1
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if not c.reason:
            yield order, c.key, c.text, c.signature


class _Earliest(beam.DoFn):
    def process(self, item):
        _, docs = item
        docs = list(docs)
        yield min(docs, key=lambda d: d[0])
        if len(docs) > 1:
            yield beam.pvalue.TaggedOutput(COUNTS, {"drop:exact_duplicate": len(docs) - 1})


def _bands(doc):
    order, _, _, signature = doc
    for band, key in enumerate(band_keys(signature[None])[0].view(np.int64)):  # Beam's int coder is signed 64-bit
        yield (band, int(key)), (order, signature)


def _verified_pairs(bucket, threshold: float):
    _, members = bucket
    members = sorted(members, key=lambda m: m[0])  # input order, as the local path's stable sort
    if len(members) > 1:
        for j, i in bucket_pairs(np.stack([m[1] for m in members]), threshold):
            yield members[j][0], members[i][0]


class _SplitOf:
    def __init__(self, recipe: Recipe):
        self.hash_split, self.val_fraction = recipe.split == "hash", recipe.val_fraction

    def __call__(self, key: bytes) -> str:
        return "val" if self.hash_split and is_validation(key, self.val_fraction) else "train"


def _chunk_starts(sizes: list, limit: int) -> dict:
    """{split: [order key of each chunk's first document]}: a chunk closes once it holds >= limit
    bytes of text (the local `_ChunkWriter` rule)."""
    starts: dict = {"train": [], "val": []}
    filled = {"train": None, "val": None}
    for split, order, n_bytes in sorted(sizes, key=lambda s: s[1]):
        if filled[split] is None:
            starts[split].append(tuple(order))
            filled[split] = 0
        filled[split] += n_bytes
        if filled[split] >= limit:
            filled[split] = None
    return starts


def _assign(doc, split_of: _SplitOf, starts: dict):
    order, key, text, _ = doc
    split = split_of(key)
    return (split, bisect.bisect_right(starts[split], tuple(order)) - 1), (order, text)


class _Tokenize(beam.DoFn):
    """One chunk's kept documents, in order -> one shard under the staging directory."""

    def __init__(self, vocab, staging: str):
        self.vocab, self.staging = vocab, staging

    def setup(self):
        from gpt2_jax.tokenizer import load_tokenizer

        self.tok = load_tokenizer(self.vocab) if isinstance(self.vocab, str) else self.vocab

    def process(self, item, drops: frozenset):
        (split, chunk), docs = item
        texts = [text for order, text in sorted(docs, key=lambda d: d[0]) if tuple(order) not in drops]
        if texts:  # else every document was a near duplicate: the shard's name stays unused, as locally
            yield self._shard(split, chunk, texts)

    def _shard(self, split: str, chunk: int, texts: list[str]) -> dict:
        from gpt2_jax.data.prepare import _text_bytes

        eot = np.array([self.tok.eot_id], dtype=np.uint16)
        tokens = np.concatenate([part for t in texts for part in (np.asarray(self.tok.encode(t), dtype=np.uint16), eot)])
        name = f"{split}_{chunk:06d}.bin"
        sha = _write_shard_to(FileSystems.join(self.staging, name), tokens)
        return {"split": split, "name": name, "tokens": int(tokens.size), "documents": len(texts), "sha256": sha,
               "max_id": int(tokens.max()), "text_bytes": _text_bytes(self.tok, tokens)}


class _SumCounts(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, counts):
        for k, v in counts.items():
            acc[k] = acc.get(k, 0) + v
        return acc

    def merge_accumulators(self, accs):
        merged = {}
        for acc in accs:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


def _write_summary(_, staging: str, errors: list, counts: dict, infos: list, drops: frozenset) -> None:
    errors = [message for _, message in sorted(errors, key=lambda e: tuple(e[0]))]
    summary = {"errors": errors[:1], "counts": {**counts, "drop:near_duplicate": len(drops)},
               "infos": sorted(infos, key=lambda i: (i["split"], i["name"]))}
    with FileSystems.create(FileSystems.join(staging, "summary.json")) as f:
        f.write(json.dumps(summary).encode("utf-8"))


def _write_shard_to(dest: str, tokens: np.ndarray) -> str:
    """Writes a shard to `dest` (a local path, or any Beam filesystem URL through a local temporary
    file); returns its sha256."""
    if "://" not in dest:
        return shard_sha256(write_shard(dest, tokens))
    with tempfile.TemporaryDirectory() as tmp:
        local = write_shard(os.path.join(tmp, "shard.bin"), tokens)
        FileSystems.copy([str(local)], [dest])
        return shard_sha256(local)
