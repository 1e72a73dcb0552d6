"""Token shard files in llm.c's layout, so shards move freely between llm.c, nanoGPT-style
numpy loaders and this library.

Layout: a 1024-byte header of 256 little-endian int32 (header[0] = magic 20240520,
header[1] = version 1, header[2] = number of tokens, the rest zero), then the tokens as
little-endian uint16. Vocabularies up to 65,536 ids fit (GPT-2 has 50,257).

A shard directory holds `train_*.bin`, `val_*.bin` and `manifest.json` (written last; see
`gpt2_jax.data.prepare` for its fields).

Shards are written to a temporary name and renamed into place, so a reader never sees a
half-written shard, and read as memory maps after checking the header against the file size.

References:
  karpathy/llm.c, dev/data/data_common.py (write_datafile) and llmc/dataloader.h.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from gpt2_jax.data.errors import ShardError

MANIFEST = "manifest.json"
SHARD_FORMAT = "llmc-uint16-v1"
MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_VOCAB = 2**16


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


def shard_sha256(path: str | os.PathLike) -> str:
    """sha256 of the whole shard file (header and tokens), as recorded in manifests."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(shard_dir: str | os.PathLike) -> dict:
    """The manifest of a complete shard directory (prepare writes it last, so a directory without
    one was never finished)."""
    path = pathlib.Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{str(shard_dir)!r} has no {MANIFEST}: not a shard directory, or its preparation did not finish; "
                         f"create or resume it with `gpt2-jax data prepare --out {shard_dir} ...`")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"{str(path)!r} is not valid JSON ({e}); re-create the shard directory") from None
    if manifest.get("format") != SHARD_FORMAT:
        raise ShardError(f"{str(path)!r} has format {manifest.get('format')!r}, expected {SHARD_FORMAT!r}")
    missing = [k for k in ("vocab", "n_vocab", "eot_id", "splits") if k not in manifest]
    if missing:
        raise ShardError(f"{str(path)!r} lacks {missing}; re-create the shard directory")
    return manifest
