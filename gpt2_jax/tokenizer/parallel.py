"""Encode a corpus across processes: documents in, one uint16 id array per document out, in order.

`Tokenizer.encode_batch` uses threads (tiktoken releases the GIL while it encodes, so threads
scale too); this module is for corpora whose size makes pickling and Python overhead matter, or
for backends that hold the GIL. Each worker loads the vocabulary once (by `Tokenizer.source`),
receives batches of documents of about `batch_chars` characters, and returns numpy arrays
(cheap to send back). At most two batches per worker are in flight, so a corpus larger than
memory streams through.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
from typing import Iterable, Iterator

import numpy as np

from gpt2_jax.tokenizer.errors import TokenizerError
from gpt2_jax.tokenizer.pretokenize import default_processes
from gpt2_jax.tokenizer.vocab import Tokenizer, load_tokenizer

_worker_tokenizer: Tokenizer | None = None


def _init(source: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(source)


def _encode_arrays(tok: Tokenizer, docs: list[str], allow_special: bool) -> list[np.ndarray]:
    return [np.asarray(ids, dtype=np.uint16) for ids in tok.encode_batch(docs, num_threads=1, allow_special=allow_special)]


def _work(docs: list[str], allow_special: bool) -> list[np.ndarray]:
    return _encode_arrays(_worker_tokenizer, docs, allow_special)


def _batches(documents: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    batch, size = [], 0
    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_corpus(tokenizer: Tokenizer | str, documents: Iterable[str], *, processes: int | None = None,
                  batch_chars: int = 1 << 20, allow_special: bool = False) -> Iterator[np.ndarray]:
    """Yields each document's ids (uint16) in input order, encoded by `processes` workers
    (default: every core; 1 = in this process)."""
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    processes = processes or default_processes()
    if processes < 1:
        raise TokenizerError(f"processes={processes} must be at least 1")
    if processes == 1:
        for batch in _batches(documents, batch_chars):
            yield from _encode_arrays(tok, batch, allow_special)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe once JAX's threads run
    with cf.ProcessPoolExecutor(processes, mp_context=context, initializer=_init, initargs=(tok.source,)) as pool:
        pending: collections.deque[cf.Future] = collections.deque()
        for batch in _batches(documents, batch_chars):
            pending.append(pool.submit(_work, batch, allow_special))
            while len(pending) >= 2 * processes:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
