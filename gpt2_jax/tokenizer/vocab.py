"""Tokenizers behind one interface, loaded by name (`gpt2`, `bytes`) or from a vocabulary directory.

`load_tokenizer` looks at the files in a directory and returns the matching kind:
  encoder.json + vocab.bpe  byte-level BPE in GPT-2's format (ours, GPT-2's, HF's GPT2Tokenizer);
  vocab.tiktoken            byte-level BPE from a tiktoken rank file (specials from meta.json);
  spm.model                 a sentencepiece model (see `sentencepiece_backend`).
The official GPT-2 vocabulary ships inside the package and loads by the name `gpt2` with no
network; its files are checked against the sha256 hashes that tiktoken pins. The byte vocabulary
(256 single-byte tokens + <|endoftext|>) ships too and loads by the name `bytes`.

Byte-level BPE encodes on tiktoken's Rust engine, fed with ranks read from our files (tiktoken's
own `gpt2` would download). Token id = merge rank, so the rank-based engine and GPT-2's merge-list
algorithm agree; the test suite checks it against tiktoken's and Hugging Face's GPT-2 on the
bundled corpus and a generated set of edge cases.

Policies, the same for every kind:
- Special tokens: `<|endoftext|>` (the document separator) is produced from text only with
  `allow_special=True`; otherwise the string is encoded as ordinary bytes, so corpus text can
  never inject a separator.
- Decoding: token ids -> bytes is total (special ids give their text). Bytes that are not valid
  UTF-8 (a character cut between tokens, or ids in a bad order) follow `errors`, exactly as in
  `bytes.decode`: "replace" (default, U+FFFD), "strict" (raises UnicodeDecodeError), "ignore",
  "backslashreplace", "surrogateescape". `decode_bytes` returns the raw bytes.
- Text that is not valid Unicode (lone surrogates, e.g. from surrogateescape) is encoded with each
  surrogate replaced by U+FFFD, as tiktoken does.
- An id outside 0..n_vocab-1 is a TokenizerError.

References:
  Radford et al. 2019, section 2.2 (byte-level BPE).
  openai/gpt-2 src/encoder.py; openai/tiktoken (r50k pre-tokenizer pattern).
"""

from __future__ import annotations

import hashlib
import pathlib
from importlib import resources
from typing import Sequence

import numpy as np
import tiktoken

from gpt2_jax.tokenizer.errors import TokenizerError
from gpt2_jax.tokenizer.formats import (ENCODER_JSON, ENDOFTEXT, MAX_VOCAB, META_JSON, TIKTOKEN_FILE, VOCAB_BPE,
                                        read_gpt2_files, read_meta, read_tiktoken_file)
from gpt2_jax.tokenizer.pretokenize import GPT2_PATTERN

__all__ = ["Tokenizer", "BPETokenizer", "TokenizerError", "load_tokenizer", "GPT2_PATTERN", "ENDOFTEXT"]

SPM_MODEL = "spm.model"
# sha256 of the official files, the same hashes tiktoken pins for its `gpt2` encoding.
# The byte vocabulary (256 single bytes in GPT-2's order + <|endoftext|>): the files `tokenizer train
# --vocab-size 257` writes for any text, so it has the same fingerprint as such a learnt vocabulary.
BUNDLED = ("gpt2", "bytes")  # vocabularies that load by name (bundled_dir)
BYTES_HASHES = {
    "vocab.bpe": "215a6aba00d27bcd42b8ad1dccc4b4d23f40decc150bdbf0d5ce6bb2410708df",
    "encoder.json": "a9264b260bb7d4b60560cd1d13e80cb07e8df0a8c27e661d1e8663614bc73655",
}
GPT2_HASHES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


class Tokenizer:
    """Encodes text to token ids and back. `name` identifies the vocabulary and `fingerprint` its
    exact contents (stored in shard manifests and checkpoints so data and models from different
    vocabularies never mix); `source` is what `load_tokenizer` needs to load it again."""

    kind = "abstract"

    def __init__(self, name: str, fingerprint: str, n_vocab: int, eot_id: int, source: str):
        self.name = name
        self.fingerprint = fingerprint
        self.n_vocab = n_vocab
        self.eot_id = eot_id
        self.source = source

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 8, allow_special: bool = False) -> list[list[int]]:
        """Encodes each text (threads; for corpora across processes see `parallel.encode_corpus`)."""
        raise NotImplementedError

    def decode_bytes(self, ids) -> bytes:
        raise NotImplementedError

    def decode(self, ids, *, errors: str = "replace") -> str:
        """Token ids -> text; bytes that are not valid UTF-8 follow `errors` as in bytes.decode."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def _check_ids(self, ids) -> list[int]:
        arr = np.asarray(ids)
        if arr.size == 0:
            return []
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TokenizerError(f"token ids must be a flat sequence of integers, got {arr.dtype} with shape {arr.shape}")
        if (arr.min() < 0 or arr.max() >= self.n_vocab):
            bad = int(arr[(arr < 0) | (arr >= self.n_vocab)][0])
            raise TokenizerError(f"token id {bad} is outside vocabulary {self.name!r} (0..{self.n_vocab - 1})")
        return arr.tolist()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n_vocab={self.n_vocab})"


class BPETokenizer(Tokenizer):
    """Byte-level BPE on tiktoken's engine (GPT-2's pre-tokenizer, our ranks)."""

    kind = "bbpe"

    def __init__(self, name: str, ranks: dict[bytes, int], special_tokens: dict[str, int], fingerprint: str, source: str):
        if ENDOFTEXT not in special_tokens:
            raise TokenizerError(f"vocabulary {name!r} has no {ENDOFTEXT} token (the document separator)")
        self._enc = tiktoken.Encoding(name=f"gpt2_jax:{name}:{fingerprint}", pat_str=GPT2_PATTERN,
                                      mergeable_ranks=ranks, special_tokens=special_tokens)
        self.special_tokens = dict(special_tokens)
        self.ranks = ranks  # token bytes -> id of the mergeable tokens (tiktoken's mergeable_ranks)
        super().__init__(name, fingerprint, len(ranks) + len(special_tokens), special_tokens[ENDOFTEXT], source)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        if allow_special:
            return self._enc.encode(text, allowed_special="all")
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 8, allow_special: bool = False) -> list[list[int]]:
        if allow_special:
            return self._enc.encode_batch(list(texts), num_threads=num_threads, allowed_special="all")
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode_bytes(self, ids) -> bytes:
        return self._enc.decode_bytes(self._check_ids(ids))


def bundled_dir(name: str) -> pathlib.Path:
    """The directory of a vocabulary that ships inside the package (one of BUNDLED)."""
    return pathlib.Path(str(resources.files("gpt2_jax") / "assets" / name))


def _sha256(*paths: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.read_bytes())
    return digest.hexdigest()


def _detect_kind(directory: pathlib.Path, meta: dict) -> str:
    d = str(directory)
    has = {f: (directory / f).is_file() for f in (ENCODER_JSON, VOCAB_BPE, TIKTOKEN_FILE, SPM_MODEL)}
    if has[ENCODER_JSON] or has[VOCAB_BPE]:
        for f in (ENCODER_JSON, VOCAB_BPE):
            if not has[f]:
                raise TokenizerError(f"vocabulary directory {d!r} has no {f}; it needs encoder.json and vocab.bpe")
        kind = "bbpe"
    elif has[TIKTOKEN_FILE]:
        kind = "bbpe"
    elif has[SPM_MODEL]:
        kind = "sentencepiece"
    else:
        raise TokenizerError(f"vocabulary directory {d!r} has no vocabulary files: expected encoder.json and vocab.bpe "
                             f"(GPT-2 format), {TIKTOKEN_FILE}, or {SPM_MODEL} (sentencepiece)")
    if meta.get("kind", kind) != kind:
        raise TokenizerError(f"vocabulary directory {d!r} is inconsistent: {META_JSON} says kind {meta['kind']!r} "
                             f"but its files are {kind!r}")
    return kind


def _load_bbpe(directory: pathlib.Path, name: str, meta: dict, hashes: dict[str, str], bundled: bool = False) -> BPETokenizer:
    d = str(directory)
    enc_path, bpe_path, tik_path = directory / ENCODER_JSON, directory / VOCAB_BPE, directory / TIKTOKEN_FILE
    if enc_path.is_file():
        for f, expected in hashes.items():
            if hashlib.sha256((directory / f).read_bytes()).hexdigest() != expected:
                raise TokenizerError(f"bundled {f} is corrupt (sha256 mismatch); reinstall gpt2_jax")
        _, ranks, specials = read_gpt2_files(directory)
        fingerprint = _sha256(enc_path, bpe_path)[:16]
        if tik_path.is_file() and read_tiktoken_file(tik_path) != ranks:
            raise TokenizerError(f"vocabulary directory {d!r} is inconsistent: {TIKTOKEN_FILE} does not hold the same "
                                 f"tokens and ranks as encoder.json + vocab.bpe; remove it or retrain")
    else:
        ranks = read_tiktoken_file(tik_path)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise TokenizerError(f"{str(tik_path)!r} lacks single-byte token(s) {missing[:5]}; a byte-level vocabulary needs all 256")
        specials = meta.get("special_tokens") or {ENDOFTEXT: len(ranks)}
        fingerprint = hashlib.sha256(tik_path.read_bytes() + repr(sorted(specials.items())).encode()).hexdigest()[:16]
    if "special_tokens" in meta and meta["special_tokens"] != specials:
        raise TokenizerError(f"vocabulary directory {d!r} is inconsistent: {META_JSON} lists special tokens "
                             f"{meta['special_tokens']} but the vocabulary files have {specials}")
    taken = set(ranks.values())
    if any(i in taken for i in specials.values()):
        raise TokenizerError(f"vocabulary directory {d!r} is inconsistent: a special-token id {specials} is also a BPE token's rank")
    n_vocab = len(ranks) + len(specials)
    if n_vocab > MAX_VOCAB:
        raise TokenizerError(f"vocabulary {d!r} has {n_vocab} tokens, above {MAX_VOCAB} (token shards store uint16 ids)")
    if ENDOFTEXT not in specials:
        raise TokenizerError(f"encoder.json in {d!r} has no {ENDOFTEXT} token")
    source = name if bundled else str(directory.resolve())
    return BPETokenizer(name, ranks, specials, fingerprint, source)


def load_tokenizer(name_or_dir: str) -> Tokenizer:
    """`"gpt2"` for the bundled official vocabulary, `"bytes"` for the byte vocabulary (257 ids, no
    merges), or a vocabulary directory (kind detected
    from its files; see the module docstring)."""
    name_or_dir = str(name_or_dir)
    if name_or_dir == "gpt2":
        return _load_bbpe(bundled_dir("gpt2"), "gpt2", {}, GPT2_HASHES, bundled=True)
    if name_or_dir == "bytes":
        return _load_bbpe(bundled_dir("bytes"), "bytes", read_meta(bundled_dir("bytes")), BYTES_HASHES, bundled=True)
    directory = pathlib.Path(name_or_dir)
    if not directory.is_dir():
        raise TokenizerError(f"vocabulary {name_or_dir!r} is neither 'gpt2', 'bytes' nor a directory with encoder.json and "
                             f"vocab.bpe (or vocab.tiktoken, or spm.model)")
    meta = read_meta(directory)
    kind = _detect_kind(directory, meta)
    if kind == "sentencepiece":
        from gpt2_jax.tokenizer.sentencepiece_backend import load_sentencepiece

        return load_sentencepiece(directory, meta)
    return _load_bbpe(directory, directory.name, meta, {})
