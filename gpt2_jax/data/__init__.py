"""Training data: corpus readers, the WebText cleaning recipe, token shards, the input pipeline.

  readers.py     text / JSONL / OpenWebText archives / TFDS -> raw documents
  clean.py       the recipe: UTF-8, normalization, length, Wikipedia filter, split; the report
  dedup.py       MinHash/LSH near-duplicate detection (exact dedup keys live in clean.py)
  ngrams.py      stable word n-gram hashes (dedup shingles, overlap 8-grams)
  prepare.py     corpus -> train/val shards + manifest, parallel and restartable
  shards.py      llm.c uint16 shard files, the manifest reader
  loader.py      TokenLoader: (seed, step) -> windows, per host, global jax.Arrays, via tf.data or threads
  prefetch.py    the TensorFlow-free pipeline's ordered, bounded background producer
  overlap.py     8-gram Bloom filter overlap of eval sets with the training shards
  tf_runtime.py  the lazy, accelerator-free, thread-bounded TensorFlow import
  cli.py         `gpt2-jax data prepare|stats|overlap`
  errors.py      DataError (CorpusError, ShardError)

TensorFlow (for tf.data and TFDS) is imported lazily inside this package only.
"""
