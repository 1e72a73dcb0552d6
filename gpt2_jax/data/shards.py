"""Token shard files in llm.c's layout, so shards move freely between llm.c, nanoGPT-style
numpy loaders and this library.

Layout: a 1024-byte header of 256 little-endian int32 (header[0] = magic 20240520,
header[1] = version 1, header[2] = number of tokens, the rest zero), then the tokens as
little-endian uint16. Vocabularies up to 65,536 ids fit (GPT-2 has 50,257).

Shards are written to a temporary name and renamed into place, so a reader never sees a
half-written shard, and read as memory maps after checking the header against the file size.

References:
  karpathy/llm.c, dev/data/data_common.py (write_datafile) and llmc/dataloader.h.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_VOCAB = 2**16


class ShardError(ValueError):
    """A shard file is missing, corrupt or holds ids the vocabulary cannot have."""


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> pathlib.Path:
    """Writes `tokens` (any integer array) atomically as one shard."""
    path = pathlib.Path(path)
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
        raise ShardError(f"token id {int(tokens.max())} does not fit a uint16 shard (ids must be < {MAX_VOCAB})")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.astype("<u2").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """The tokens of a shard as a read-only uint16 memory map; the header is validated first."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ShardError(f"shard {str(path)!r} does not exist")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"shard {str(path)!r} is {size} bytes, shorter than its {HEADER_BYTES}-byte header; re-create it")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ShardError(f"shard {str(path)!r} has magic {header[0]}, expected {MAGIC}: not an llm.c token shard")
    if header[1] != VERSION:
        raise ShardError(f"shard {str(path)!r} has version {header[1]}; this reader supports version {VERSION} (uint16 tokens)")
    n = int(header[2])
    if size != HEADER_BYTES + 2 * n:
        raise ShardError(f"shard {str(path)!r} header says {n} tokens but the file holds {(size - HEADER_BYTES) / 2:g}; it is truncated or corrupt")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
