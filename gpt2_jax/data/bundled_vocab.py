"""The vocabulary a `data.vocab` setting names, learnt on the training text when it must be.

`gpt2-jax train` without `data.path` tokenizes the bundled corpus itself. Which vocabulary it
uses is the tokenizer ablation's one switch: the official GPT-2 vocabulary, raw bytes (256 ids
plus <|endoftext|>, i.e. a byte-level BPE with no merges), GPT-2's byte-level BPE at any size,
or a sentencepiece BPE (byte fallback, so lossless). Learnt vocabularies see only the training
part of the text, so validation bits per byte are not flattered by merges fitted to it.
Vocabularies are compared in bits per byte (see `bits_per_byte`), never per token: a token
of a larger vocabulary carries more bytes.

References:
  Radford et al. 2019, section 2.2 (byte-level BPE versus bytes and Unicode BPE).
  Kudo & Richardson 2018, "SentencePiece".
  Gao et al. 2020, "The Pile", section 5 (bits per UTF-8 byte as the vocabulary-free metric).
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Callable

BYTES_VOCAB = 257  # 256 byte ids + <|endoftext|>


def build_vocab(spec: str, train_text: str, out_dir: pathlib.Path, say: Callable[[str], None] = print) -> str:
    """What `load_tokenizer` takes for `spec` ("gpt2", "bytes", "bbpe:N" or "sp:N"; "auto" must be
    resolved first, see DataConfig.vocab_for): "gpt2", or the directory of a vocabulary learnt
    on `train_text` and saved to `out_dir` (reused if it is already there)."""
    if spec == "gpt2":
        return "gpt2"
    kind, _, size = spec.partition(":")
    if kind not in ("bytes", "bbpe", "sp"):
        raise ValueError(f"vocabulary {spec!r} is not gpt2, bytes, bbpe:N or sp:N")
    if (out_dir / "meta.json").is_file():
        return str(out_dir)
    t0 = time.perf_counter()
    if kind == "sp":
        from gpt2_jax.tokenizer import train_sentencepiece

        train_sentencepiece(int(size), documents=[train_text], processes=1).save(out_dir)
        what = f"a {int(size)}-piece sentencepiece BPE"
    else:
        from gpt2_jax.tokenizer import train_bbpe

        n = BYTES_VOCAB if kind == "bytes" else int(size)
        train_bbpe(n, documents=[train_text], progress=False).save(out_dir)
        what = "the byte vocabulary (256 bytes + <|endoftext|>)" if kind == "bytes" else f"a {n}-token byte-level BPE"
    say(f"learnt {what} on the training text in {time.perf_counter() - t0:.1f} s -> {out_dir}")
    return str(out_dir)


def bytes_per_token(manifest: dict, split: str) -> float | None:
    """UTF-8 bytes of text per token of `split`, from a shard manifest (None if not recorded)."""
    info = manifest.get("splits", {}).get(split, {})
    value = info.get("bytes_per_token")
    return float(value) if value else None


def bits_per_byte(loss_nats: float, bytes_per_token_: float) -> float:
    """A mean next-token loss in nats converted to bits per byte of text."""
    return loss_nats / math.log(2) / bytes_per_token_
