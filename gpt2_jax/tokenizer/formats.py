"""Byte-level BPE vocabularies on disk: GPT-2's `encoder.json` + `vocab.bpe`, tiktoken's rank file.

A byte-level BPE vocabulary is 256 single-byte tokens, an ordered list of merges (each merge makes
one new token from two existing ones) and a few special tokens. Ids follow GPT-2's layout, which
is also what tiktoken's GPT-2 reader requires: ids 0..255 are the single bytes in GPT-2's order
(the printable latin-1 bytes first, then the rest; see `BYTE_ORDER`), id 256 + i is the token made
by merge i, and special tokens come last (`<|endoftext|>` is id 50256 in GPT-2). A token's id is
its merge rank, so tiktoken's rank-based engine and GPT-2's merge-list algorithm agree.

Files, all in one vocabulary directory:
  encoder.json   {token as GPT-2's byte-to-unicode string: id}, specials included (GPT-2, HF).
  vocab.bpe      "#version: 0.2" then one merge per line, "left right" in the same alphabet.
  vocab.tiktoken tiktoken's rank file: base64(token bytes) and rank per line, specials excluded.
  meta.json      our own notes: kind, special tokens, pre-tokenizer pattern, how it was trained.
Readers check that the files agree with each other and name the first disagreement.

References:
  openai/gpt-2 src/encoder.py (bytes_to_unicode, encoder.json, vocab.bpe).
  openai/tiktoken tiktoken/load.py (data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Iterator

from gpt2_jax.tokenizer.errors import TokenizerError

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
TIKTOKEN_FILE = "vocab.tiktoken"
META_JSON = "meta.json"
ENDOFTEXT = "<|endoftext|>"
MAX_VOCAB = 65536  # token shards store uint16 ids


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters (so that merges can be
    written as whitespace-separated text): printable latin-1 bytes map to themselves, the other
    68 bytes to U+0100 onwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return chars


BYTE_TO_UNICODE = _bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}
# BYTE_ORDER[i] is the byte whose token id is i: sorted by the byte's unicode stand-in, which is
# GPT-2's encoder.json order, tiktoken's `rank_to_intbyte` and HF's sorted initial alphabet.
BYTE_ORDER = sorted(range(256), key=lambda b: BYTE_TO_UNICODE[b])
# bytes.translate tables between raw bytes and base token ids (both are 0..255).
BYTES_TO_IDS = bytes(BYTE_ORDER.index(b) for b in range(256))
IDS_TO_BYTES = bytes(BYTE_ORDER)


def token_to_str(token: bytes) -> str:
    return "".join(BYTE_TO_UNICODE[b] for b in token)


def str_to_token(text: str) -> bytes:
    """Inverse of `token_to_str`; KeyError for a character outside GPT-2's byte alphabet."""
    return bytes(UNICODE_TO_BYTE[c] for c in text)


@dataclass
class BPEVocab:
    """A byte-level BPE vocabulary: merges in rank order plus special tokens (string -> id)."""

    merges: list[tuple[bytes, bytes]]
    special_tokens: dict[str, int]
    meta: dict = field(default_factory=dict)

    @property
    def n_vocab(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    def ranks(self) -> dict[bytes, int]:
        """token bytes -> id for the mergeable (non-special) tokens: tiktoken's `mergeable_ranks`."""
        ranks = {bytes([b]): i for i, b in enumerate(BYTE_ORDER)}
        for left, right in self.merges:
            ranks[left + right] = len(ranks)
        return ranks

    def save(self, out_dir: str | os.PathLike) -> pathlib.Path:
        """Writes all four files into a new (or empty) directory, atomically."""
        with vocab_dir(out_dir) as tmp:
            write_gpt2_files(self, tmp)
            write_tiktoken_file(self.ranks(), tmp / TIKTOKEN_FILE)
            write_meta(tmp, {"kind": "bbpe", "n_vocab": self.n_vocab, "special_tokens": self.special_tokens, **self.meta})
        return pathlib.Path(out_dir)


def check_output_dir(out_dir: str | os.PathLike) -> pathlib.Path:
    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TokenizerError(f"output {str(out)!r} exists and is not an empty directory; choose a new path or remove it")
    return out


@contextlib.contextmanager
def vocab_dir(out_dir: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary directory that becomes `out_dir` when the block succeeds, so a crash
    leaves no half-written vocabulary. `out_dir` must not exist or be an empty directory."""
    out = check_output_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a vocabulary is ordinary data
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_meta(directory: pathlib.Path, meta: dict) -> None:
    (directory / META_JSON).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_gpt2_files(vocab: BPEVocab, directory: pathlib.Path) -> None:
    ranks = vocab.ranks()
    encoder = {token_to_str(t): i for t, i in ranks.items()}
    encoder.update(vocab.special_tokens)
    (directory / ENCODER_JSON).write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{token_to_str(a)} {token_to_str(b)}" for a, b in vocab.merges]
    (directory / VOCAB_BPE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_tiktoken_file(ranks: dict[bytes, int], path: pathlib.Path) -> None:
    lines = [base64.b64encode(t).decode("ascii") + f" {r}" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def read_tiktoken_file(path: pathlib.Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise TokenizerError(f"{str(path)!r} line {n} is not 'BASE64TOKEN RANK': {line[:60]!r}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{str(path)!r} ranks are not 0..{len(ranks) - 1} each used once (duplicate token or gap)")
    return ranks


def read_gpt2_files(directory: pathlib.Path) -> tuple[list[tuple[bytes, bytes]], dict[bytes, int], dict[str, int]]:
    """Reads encoder.json + vocab.bpe -> (merges, mergeable ranks, special tokens), checking that
    the two files describe the same vocabulary."""
    bpe_path, enc_path = directory / VOCAB_BPE, directory / ENCODER_JSON
    merges: list[tuple[bytes, bytes]] = []
    ranks = {bytes([b]): i for i, b in enumerate(BYTE_ORDER)}
    try:
        lines = bpe_path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise TokenizerError(f"{str(bpe_path)!r} is not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        try:
            if len(parts) != 2:
                raise KeyError
            left, right = str_to_token(parts[0]), str_to_token(parts[1])
        except KeyError:
            raise TokenizerError(f"{str(bpe_path)!r} line {n} is not a merge 'LEFT RIGHT' in GPT-2's byte alphabet: {line[:60]!r}") from None
        for part in (left, right):
            if part not in ranks:
                raise TokenizerError(f"{str(bpe_path)!r} line {n} merges {token_to_str(part)!r}, which no earlier line makes")
        if left + right in ranks:
            raise TokenizerError(f"{str(bpe_path)!r} line {n} makes {token_to_str(left + right)!r} again (duplicate merge result)")
        ranks[left + right] = len(ranks)
        merges.append((left, right))
    try:
        encoder = json.loads(enc_path.read_text(encoding="utf-8"))
        if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
            raise ValueError("not an object of token -> integer id")
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{str(enc_path)!r} is not valid JSON of token -> id ({e})") from None
    inconsistent = f"vocabulary files in {str(directory)!r} are inconsistent (encoder.json does not match vocab.bpe merges)"
    n_merge = len(ranks)
    specials: dict[str, int] = {}
    seen = 0
    for key, idx in encoder.items():
        if idx >= n_merge:
            specials[key] = idx
            continue
        try:
            token = str_to_token(key)
        except KeyError:
            token = None
        if ranks.get(token) != idx:
            raise TokenizerError(f"{inconsistent}: encoder.json gives {key!r} id {idx}, vocab.bpe makes it "
                                 f"{ranks.get(token, 'no token')}")
        seen += 1
    if seen != n_merge:
        raise TokenizerError(f"{inconsistent}: vocab.bpe makes {n_merge} tokens, encoder.json lists {seen} of them")
    if sorted(specials.values()) != list(range(n_merge, n_merge + len(specials))):
        raise TokenizerError(f"{inconsistent}: special-token ids {sorted(specials.values())[:5]} do not follow the "
                             f"{n_merge} merged tokens without gaps")
    return merges, ranks, specials


def read_meta(directory: pathlib.Path) -> dict:
    path = directory / META_JSON
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{str(path)!r} is not valid JSON ({e}); remove it or rewrite it") from None
    return meta
