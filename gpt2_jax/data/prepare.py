"""Text files -> tokenized train/val shards plus a manifest, the input format of training.

Each input file is one document; documents are joined with `<|endoftext|>` (GPT-2's separator)
and the token stream is split by position: the first (1 - val_fraction) for training, the rest
for validation, the way nanoGPT splits tiny Shakespeare. The manifest is written last, so a
directory with a manifest is complete; an interrupted run leaves no manifest and is redone.

The full WebText-style recipe (cleaning, dedup, parallel tokenization) builds on this format.

References:
  karpathy/nanoGPT data/shakespeare/prepare.py (90/10 split of tiny Shakespeare).
"""

from __future__ import annotations

import json
import os
import pathlib
from importlib import resources

import numpy as np

from gpt2_jax.data.shards import write_shard
from gpt2_jax.tokenizer import Tokenizer

MANIFEST = "manifest.json"
SHARD_FORMAT = "llmc-uint16-v1"


class CorpusError(ValueError):
    """An input corpus cannot be used; the message names the file and the problem."""


def bundled_corpus() -> pathlib.Path:
    """Tiny Shakespeare (1,115,394 bytes), shipped with the package as the default corpus."""
    return pathlib.Path(str(resources.files("gpt2_jax") / "assets" / "corpora" / "tinyshakespeare.txt"))


def read_document(path: pathlib.Path) -> str:
    if not path.is_file():
        raise CorpusError(f"corpus file {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {str(path)!r} is not UTF-8 (bad byte at offset {e.start}); convert it to UTF-8") from None
    if not text.strip():
        raise CorpusError(f"corpus file {str(path)!r} is empty; pass a file with text")
    return text


def prepare_text(inputs: list[str | os.PathLike], out_dir: str | os.PathLike, tokenizer: Tokenizer,
                 *, val_fraction: float = 0.1) -> dict:
    """Tokenizes `inputs` into `out_dir`/{train,val}_000000.bin and returns the manifest."""
    if not inputs:
        raise CorpusError("no corpus files given")
    if not 0 < val_fraction < 1:
        raise CorpusError(f"val_fraction={val_fraction} must be in (0, 1)")
    docs = [read_document(pathlib.Path(p)) for p in inputs]
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc))
        ids.append(tokenizer.eot_id)
    tokens = np.asarray(ids, dtype=np.uint16)
    n_val = max(1, int(len(tokens) * val_fraction))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # not complete until rewritten below
    write_shard(out / "train_000000.bin", tokens[:-n_val])
    write_shard(out / "val_000000.bin", tokens[-n_val:])
    manifest = {
        "format": SHARD_FORMAT,
        "vocab": tokenizer.name,
        "vocab_fingerprint": tokenizer.fingerprint,
        "n_vocab": tokenizer.n_vocab,
        "eot_id": tokenizer.eot_id,
        "documents": len(docs),
        "sources": [str(p) for p in inputs],
        "splits": {
            "train": {"shards": ["train_000000.bin"], "tokens": int(len(tokens) - n_val)},
            "val": {"shards": ["val_000000.bin"], "tokens": int(n_val)},
        },
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest
