"""A byte-level BPE vocabulary in GPT-2's file format (`encoder.json` + `vocab.bpe`).

The official GPT-2 vocabulary ships inside the package and loads by the name `gpt2` with no
network. Any directory holding the same two files loads the same way. Encoding runs on
tiktoken's engine, fed with ranks read from our files (tiktoken's own `gpt2` would download).

Special tokens: `<|endoftext|>` (the document separator, id n_vocab - 1 in GPT-2) is only
produced from text when `allow_special=True`; otherwise the string is encoded as plain bytes,
so corpus text can never inject a separator.

References:
  Radford et al. 2019, section 2.2 (byte-level BPE).
  openai/gpt-2 src/encoder.py; openai/tiktoken (r50k pre-tokenizer pattern).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from importlib import resources

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other runs, each optionally
# led by one space; whitespace runs keep their last space for the following word.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# sha256 of the official files, the same hashes tiktoken pins for its `gpt2` encoding.
GPT2_HASHES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


class TokenizerError(ValueError):
    """A vocabulary cannot be loaded or used; the message says why and how to fix it."""


class Tokenizer:
    """Encodes text to token ids and back. `name` identifies the vocabulary (stored in shard
    manifests and checkpoints so data and models from different vocabularies never mix)."""

    def __init__(self, name: str, encoding: tiktoken.Encoding, fingerprint: str):
        self.name = name
        self.fingerprint = fingerprint
        self._enc = encoding
        self.n_vocab = encoding.n_vocab
        self.eot_id = encoding.eot_token

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        if allow_special:
            return self._enc.encode(text, allowed_special="all")
        return self._enc.encode(text, disallowed_special=())

    def encode_batch(self, texts: list[str], *, num_threads: int = 8) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids, *, errors: str = "replace") -> str:
        """Token ids -> text. Byte sequences that are not valid UTF-8 (a multi-byte character
        cut between tokens) follow `errors`, as in bytes.decode ("replace", "strict", ...)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise TokenizerError(f"token id {bad[0]} is outside vocabulary {self.name!r} (0..{self.n_vocab - 1})")
        return self._enc.decode_bytes(ids).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, n_vocab={self.n_vocab})"


def _bundled_gpt2_dir() -> pathlib.Path:
    return pathlib.Path(str(resources.files("gpt2_jax") / "assets" / "gpt2"))


def load_tokenizer(name_or_dir: str) -> Tokenizer:
    """`"gpt2"` for the bundled official vocabulary, or a directory with encoder.json + vocab.bpe."""
    if name_or_dir == "gpt2":
        directory, hashes = _bundled_gpt2_dir(), GPT2_HASHES
    else:
        directory, hashes = pathlib.Path(name_or_dir), {}
        if not directory.is_dir():
            raise TokenizerError(f"vocabulary {name_or_dir!r} is neither 'gpt2' nor a directory with encoder.json and vocab.bpe")
    paths = {f: directory / f for f in ("encoder.json", "vocab.bpe")}
    for f, p in paths.items():
        if not p.is_file():
            raise TokenizerError(f"vocabulary directory {str(directory)!r} has no {f}; it needs encoder.json and vocab.bpe")
    digest = hashlib.sha256()
    for f in ("encoder.json", "vocab.bpe"):
        data = paths[f].read_bytes()
        if f in hashes and hashlib.sha256(data).hexdigest() != hashes[f]:
            raise TokenizerError(f"bundled {f} is corrupt (sha256 mismatch); reinstall gpt2_jax")
        digest.update(data)
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(str(paths["vocab.bpe"]), str(paths["encoder.json"]))
        encoder = json.loads(paths["encoder.json"].read_text(encoding="utf-8"))
    except (AssertionError, KeyError, ValueError, UnicodeDecodeError) as e:
        raise TokenizerError(
            f"vocabulary files in {str(directory)!r} are inconsistent (encoder.json does not match vocab.bpe merges): {e!r}"
        ) from None
    if ENDOFTEXT not in encoder:
        raise TokenizerError(f"encoder.json in {str(directory)!r} has no {ENDOFTEXT} token")
    name = "gpt2" if name_or_dir == "gpt2" else directory.name
    encoding = tiktoken.Encoding(
        name=f"gpt2_jax:{name}",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: encoder[ENDOFTEXT]},
    )
    return Tokenizer(name, encoding, digest.hexdigest()[:16])
