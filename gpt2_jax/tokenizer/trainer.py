"""Train a byte-level BPE vocabulary (GPT-2's BBPE) on text files or documents.

Two phases:
1. Count pre-tokens once (`pretokenize.count_pretokens`: streamed, parallel over processes for
   large inputs). Every later step works on distinct pre-tokens ("words") weighted by count.
2. Merge. Each word is a list of token ids, starting as its UTF-8 bytes. We keep the count of
   every adjacent pair (weighted by word count), an index pair -> words that contain it, and a
   heap of (count, pair) with lazy invalidation. A merge touches only the words in its index
   entry; for each occurrence it moves counts from the two neighbouring pairs to the pairs with
   the new token, exactly as a full recount would, and pushes the pairs it created. Counts only
   ever fall for existing pairs, so a popped entry whose stored count is stale is pushed back
   with its current count, and an entry whose count is current is the true maximum.

Tie-breaking (determinism): the next merge is the pair with the highest count; among equal
counts, the pair (left id, right id) that is smallest, comparing left ids first. Ids are GPT-2's
(bytes in `formats.BYTE_ORDER`, then merged tokens in creation order). This is Hugging Face
`tokenizers`' rule too (its BpeTrainer orders its heap by count, then ascending pair ids, and
gives the byte alphabet ids in the same order), so on the same pre-tokens both learn the same
merges (checked in the tests and, on ../shared/data at 8192 and 32768 tokens, in
experiments/benchmarks/tokenizer_train.py). One deliberate difference: if the best pair would
make a token that already exists (the same bytes split differently; not seen on real text, but
not ruled out), HF records a second merge for that token, which tiktoken's rank files cannot
express; we drop the pair for good and take the next one. Results do not depend on input order,
process count or hash seeds.

Where the time goes (8 MB of text, 2 cores): about 40% counting (the `regex` module's findall,
~10-15 MB/s per process) and 60% merging, of which most is the per-occurrence dictionary
updates in the loop below; heap operations are a small share. Both phases are pure Python.

Merges within a word apply left to right without overlap ("a a a" -> "aa a"), like GPT-2's
encoder, HF and tiktoken.

References:
  Sennrich et al. 2016 (BPE for subwords); Radford et al. 2019 section 2.2 (byte-level BPE,
  no merges across character categories).
  huggingface/tokenizers src/models/bpe/trainer.rs (incremental pair counts, tie-breaking).
"""

from __future__ import annotations

import heapq
import os
import time
from typing import Iterable, Mapping, Sequence

from gpt2_jax.tokenizer.errors import TokenizerError
from gpt2_jax.tokenizer.formats import BYTE_ORDER, BYTES_TO_IDS, ENDOFTEXT, MAX_VOCAB, BPEVocab
from gpt2_jax.tokenizer.pretokenize import GPT2_PATTERN, count_pretokens

_SHIFT = 1 << 32  # heap item = -count * 2**32 + (left << 16 | right): one int, ordered as the rule says
_MASK = _SHIFT - 1


def check_vocab_size(vocab_size, n_specials: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TokenizerError(f"vocab size {vocab_size!r} must be an integer")
    floor = 256 + n_specials
    if vocab_size < floor:
        raise TokenizerError(f"vocab size {vocab_size} is below 256 byte tokens + {n_specials} special token(s) = "
                             f"{floor}; use a vocab size of at least {floor}")
    if vocab_size > MAX_VOCAB:
        raise TokenizerError(f"vocab size {vocab_size} is above {MAX_VOCAB}: token shards store uint16 ids; "
                             f"use at most {MAX_VOCAB}")


def check_special_tokens(special_tokens: Sequence[str]) -> tuple[str, ...]:
    specials = tuple(special_tokens)
    if ENDOFTEXT not in specials:
        raise TokenizerError(f"special tokens {list(specials)} must include {ENDOFTEXT} (the document separator)")
    if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
        raise TokenizerError(f"special tokens {list(specials)} must be distinct non-empty strings")
    return specials


def learn_merges(word_counts: Mapping[str, int], n_merges: int, *, progress: bool = False) -> list[tuple[bytes, bytes]]:
    """The first `n_merges` BPE merges of the pre-token counts (fewer if the words run out of pairs)."""
    from tqdm import tqdm

    words: list[list[int]] = []
    freqs: list[int] = []
    for piece, n in word_counts.items():
        data = piece.encode("utf-8")
        if len(data) > 1 and n > 0:  # one-byte words have no pairs
            words.append(list(data.translate(BYTES_TO_IDS)))
            freqs.append(n)

    pair_counts: dict[int, int] = {}
    where: dict[int, set[int]] = {}
    for w, word in enumerate(words):
        n = freqs[w]
        prev = word[0]
        for tok in word[1:]:
            key = prev << 16 | tok
            pair_counts[key] = pair_counts.get(key, 0) + n
            ws = where.get(key)
            if ws is None:
                where[key] = {w}
            else:
                ws.add(w)
            prev = tok
    heap = [-cnt * _SHIFT + key for key, cnt in pair_counts.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([b]) for b in BYTE_ORDER]
    known = set(token_bytes)
    merges: list[tuple[bytes, bytes]] = []
    heappush, heappop = heapq.heappush, heapq.heappop
    bar = tqdm(total=n_merges, desc="merge", unit="merge", disable=not progress, mininterval=0.5)
    while len(merges) < n_merges and heap:
        item = heappop(heap)
        key = item & _MASK
        count = -(item >> 32)
        current = pair_counts.get(key, 0)
        if current != count:  # stale: counts only fall, so push back and look again
            if current > 0:
                heappush(heap, -current * _SHIFT + key)
            continue
        a, b = key >> 16, key & 0xFFFF
        merged = token_bytes[a] + token_bytes[b]
        if merged in known:  # the same bytes split differently: not expressible in rank files
            del pair_counts[key]
            continue
        c = len(token_bytes)
        token_bytes.append(merged)
        known.add(merged)
        merges.append((token_bytes[a], token_bytes[b]))
        new_keys = []
        for w in where.pop(key):
            word = words[w]
            try:
                i = word.index(a)
            except ValueError:
                continue
            n = freqs[w]
            length = len(word)
            out = word[:i]
            while i < length:
                tok = word[i]
                if tok == a and i + 1 < length and word[i + 1] == b:
                    if out:
                        prev = out[-1]
                        pair_counts[prev << 16 | a] -= n
                        k = prev << 16 | c
                        pair_counts[k] = pair_counts.get(k, 0) + n
                        ws = where.get(k)
                        if ws is None:
                            where[k] = {w}
                            new_keys.append(k)
                        else:
                            ws.add(w)
                    out.append(c)
                    i += 2
                    if i < length:
                        nxt = word[i]
                        pair_counts[b << 16 | nxt] -= n
                        k = c << 16 | nxt
                        pair_counts[k] = pair_counts.get(k, 0) + n
                        ws = where.get(k)
                        if ws is None:
                            where[k] = {w}
                            new_keys.append(k)
                        else:
                            ws.add(w)
                else:
                    out.append(tok)
                    i += 1
            words[w] = out
        pair_counts.pop(key, None)
        for k in new_keys:
            cnt = pair_counts[k]
            if cnt > 0:
                heappush(heap, -cnt * _SHIFT + k)
        if len(merges) % 256 == 0:
            bar.update(256)
    bar.update(len(merges) - bar.n)
    bar.close()
    return merges


def train_bbpe(vocab_size: int, *, files: Sequence[str | os.PathLike] | None = None,
               documents: Iterable[str] | None = None, special_tokens: Sequence[str] = (ENDOFTEXT,),
               processes: int | None = None, progress: bool = True) -> BPEVocab:
    """Learns a GPT-2-style vocabulary of exactly `vocab_size` tokens (256 bytes + merges +
    special tokens, specials last) from `files` (each one document) or `documents`.
    Save it with `.save(dir)`; load it with `load_tokenizer(dir)`."""
    specials = check_special_tokens(special_tokens)
    check_vocab_size(vocab_size, len(specials))
    n_merges = vocab_size - 256 - len(specials)
    t0 = time.perf_counter()
    counts, n_chars = count_pretokens(files=files, documents=documents, special_tokens=specials,
                                      processes=processes, progress=progress)
    if not counts:
        where = f"files {[str(f) for f in files]}" if files is not None else "the documents"
        raise TokenizerError(f"the corpus is empty: no text in {where}; pass files with text")
    t1 = time.perf_counter()
    merges = learn_merges(counts, n_merges, progress=progress)
    t2 = time.perf_counter()
    if len(merges) < n_merges:
        most = 256 + len(merges) + len(specials)
        raise TokenizerError(f"the corpus ({n_chars:,} characters) supports only {len(merges)} merges, so vocab size "
                             f"{vocab_size} cannot be reached; use a vocab size of at most {most} or more text")
    special_ids = {s: 256 + n_merges + i for i, s in enumerate(specials)}
    meta = {
        "pattern": GPT2_PATTERN,
        "trainer": {
            "algorithm": "byte-level BPE, incremental pair counts; ties: highest count, then smallest (left id, right id)",
            "characters": n_chars,
            "distinct_pretokens": len(counts),
            "seconds_count": round(t1 - t0, 3),
            "seconds_merge": round(t2 - t1, 3),
        },
    }
    if files is not None:
        meta["trainer"]["files"] = [str(f) for f in files]
    return BPEVocab(merges=merges, special_tokens=special_ids, meta=meta)
