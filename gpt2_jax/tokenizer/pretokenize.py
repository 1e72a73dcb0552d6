"""GPT-2's pre-tokenizer and streamed, parallel pre-token counting for the BPE trainer.

Before BPE, text is split into pre-tokens by GPT-2's regular expression: contractions, runs of
letters, runs of digits, runs of other symbols, each optionally led by one space, and whitespace
runs that leave their last space to the word that follows. BPE never merges across pre-tokens, so
the trainer only needs how often each distinct pre-token occurs: a counter whose size grows with
the vocabulary of the corpus, not with its length. That is what keeps training on many GB bounded.

Files are read in blocks and cut only between a non-space and a space character. No pre-token
spans such a point and no match before it looks past it, so the counts equal those of splitting
each whole file at once (each file is one document, as in `gpt2_jax.data.prepare`). Blocks are
counted by a pool of processes ("spawn": safe when JAX threads are running in the parent), at
most two blocks per worker in flight, so memory stays bounded while the readers stay busy.

Special tokens (`<|endoftext|>`) in training text are document separators: the text is split on
them and they never take part in merges.

The pattern runs on the `regex` module here and on Rust's regex inside tiktoken (the encoder).
They agree except on a few code points assigned in recent Unicode versions, which one engine
knows as letters and the other does not; that can only change which merges are learned, never
whether encoding is exact.

References:
  openai/gpt-2 src/encoder.py (the pattern); openai/tiktoken (r50k_base, the same pattern).
"""

from __future__ import annotations

import codecs
import collections
import concurrent.futures as cf
import functools
import multiprocessing
import os
import pathlib
from typing import Iterable, Iterator, Sequence

import regex

from gpt2_jax.tokenizer.errors import TokenizerError

# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other runs, each optionally led by
# one space; whitespace runs keep their last space for the following word.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BLOCK_BYTES = 4 << 20
MAX_CARRY_CHARS = 64 << 20  # a block with no space in 64M characters is cut anyway
PARALLEL_MIN_BYTES = 32 << 20  # below this, process start-up costs more than it saves

_SPLIT = regex.compile(GPT2_PATTERN)
_LAST_LINE_END = regex.compile(r"(?r)\S(?=\n)")  # (?r): search from the end
_LAST_WORD_END = regex.compile(r"(?r)\S(?=\s)")


def split(text: str) -> list[str]:
    """GPT-2 pre-tokens of `text` (special tokens are not treated specially here)."""
    return _SPLIT.findall(text)


@functools.lru_cache(maxsize=8)
def _specials_regex(special_tokens: tuple[str, ...]):
    if not special_tokens:
        return None
    return regex.compile("|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)))


def count_text(texts: Sequence[str], special_tokens: tuple[str, ...] = ()) -> collections.Counter:
    """Pre-token counts of several independent texts (documents or safe blocks)."""
    counts: collections.Counter = collections.Counter()
    specials = _specials_regex(special_tokens)
    for text in texts:
        for part in specials.split(text) if specials else (text,):
            counts.update(_SPLIT.findall(part))
    return counts


def _count_task(texts: list[str], special_tokens: tuple[str, ...]) -> tuple[collections.Counter, int]:
    return count_text(texts, special_tokens), sum(len(t) for t in texts)


def safe_cut(text: str) -> int:
    """The last index i > 0 with text[i-1] a non-space and text[i] a space (a pre-token boundary
    whatever follows), preferring a newline; 0 if there is none."""
    m = _LAST_LINE_END.search(text) or _LAST_WORD_END.search(text)
    return m.end() if m else 0


def check_files(paths: Iterable[str | os.PathLike]) -> list[pathlib.Path]:
    files = [pathlib.Path(p) for p in paths]
    if not files:
        raise TokenizerError("no input files given; pass at least one text file")
    for f in files:
        if not f.exists():
            raise TokenizerError(f"input file {str(f)!r} does not exist")
        if not f.is_file():
            raise TokenizerError(f"input {str(f)!r} is not a regular file; pass text files")
    return files


def iter_file_blocks(path: pathlib.Path, block_bytes: int | None = None) -> Iterator[tuple[str, int]]:
    """(text, bytes read) blocks of a UTF-8 file, cut at safe points; newlines kept as they are."""
    block_bytes = block_bytes or BLOCK_BYTES
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    carry, offset, unreported = "", 0, 0
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            try:
                text = carry + decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                pending = len(decoder.getstate()[0])
                raise TokenizerError(f"input file {str(path)!r} is not UTF-8 (bad byte near offset "
                                     f"{offset - pending + e.start}); convert it to UTF-8") from None
            offset += len(data)
            unreported += len(data)
            if not data:
                if text:
                    yield text, unreported
                return
            cut = safe_cut(text) if len(text) < MAX_CARRY_CHARS else len(text)
            carry = text[cut:]
            if cut:
                yield text[:cut], unreported
                unreported = 0


def _batched_documents(documents: Iterable[str], block_chars: int) -> Iterator[tuple[list[str], int]]:
    batch, size = [], 0
    for doc in documents:
        if not isinstance(doc, str):
            raise TokenizerError(f"documents must be str, got {type(doc).__name__}")
        batch.append(doc)
        size += len(doc)
        if size >= block_chars:
            yield batch, size
            batch, size = [], 0
    if batch:
        yield batch, size


def default_processes() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def count_pretokens(*, files: Sequence[str | os.PathLike] | None = None, documents: Iterable[str] | None = None,
                    special_tokens: Sequence[str] = (), processes: int | None = None,
                    progress: bool = True) -> tuple[collections.Counter, int]:
    """Counts GPT-2 pre-tokens of `files` (each file one document) or of `documents` (strings).
    Returns (pre-token -> count, characters read). `processes=None` picks one process for small
    inputs and every core for files totalling 32 MiB or more."""
    from tqdm import tqdm

    if (files is None) == (documents is None):
        raise TokenizerError("pass either files or documents")
    specials = tuple(special_tokens)
    if files is not None:
        paths = check_files(files)
        total = sum(p.stat().st_size for p in paths)
        if processes is None:
            processes = default_processes() if total >= PARALLEL_MIN_BYTES else 1
        tasks: Iterator = (([text], nbytes) for p in paths for text, nbytes in iter_file_blocks(p))
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="count pre-tokens", disable=not progress)
    else:
        processes = processes or 1
        tasks = _batched_documents(documents, BLOCK_BYTES)
        bar = tqdm(unit="char", unit_scale=True, desc="count pre-tokens", disable=not progress)
    if processes < 1:
        raise TokenizerError(f"processes={processes} must be at least 1")
    counts: collections.Counter = collections.Counter()
    n_chars = 0
    with bar:
        if processes == 1:
            for texts, size in tasks:
                counts.update(count_text(texts, specials))
                n_chars += sum(len(t) for t in texts)
                bar.update(size)
            return counts, n_chars
        # Bounded in flight: Pool.imap would read the whole input ahead of the workers.
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(processes, mp_context=context) as pool:
            pending: dict[cf.Future, int] = {}
            for texts, size in tasks:
                pending[pool.submit(_count_task, texts, specials)] = size
                while len(pending) >= 2 * processes:
                    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        part, chars = fut.result()
                        counts.update(part)
                        n_chars += chars
                        bar.update(pending.pop(fut))
            for fut in cf.as_completed(list(pending)):
                part, chars = fut.result()
                counts.update(part)
                n_chars += chars
                bar.update(pending.pop(fut))
    return counts, n_chars
