"""BBPE trainer vs Hugging Face `tokenizers` (Rust) ByteLevel BPE trainer: wall time and compression.

Both learn from the same documents (the first 90% of every text in ../shared/data, each file one
document, whole, so both pre-tokenize exactly the same strings) to the same vocabulary size
(256 bytes + merges + <|endoftext|>), then encode the held-out 10% with their own encoders.
Compression is bytes per token on the held-out text (higher is better). Timings are interleaved
rounds (ours, HF, ours, HF, ...) and the table shows the median; ours is split into pre-token
counting and merging. "same merges" counts how many of the merge lists agree, in order, from the
first merge. sentencepiece (BPE + byte fallback, our backend) is listed for the vocabulary
ablations; its compression is not comparable one to one (different pre-tokenization).

    .venv/bin/python experiments/benchmarks/tokenizer_train.py [--sizes 8192 32768] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from tokenizer_common import header, shared_documents, split_heldout


def train_hf(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    start = time.perf_counter()
    tok.train_from_iterator(docs, trainer)
    return tok, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=None, help="our counting processes (default: automatic)")
    args = ap.parse_args()

    from gpt2_jax.tokenizer import train_bbpe
    from gpt2_jax.tokenizer.formats import token_to_str
    from gpt2_jax.tokenizer.sentencepiece_backend import SentencePieceTokenizer, train_sentencepiece
    from gpt2_jax.tokenizer.vocab import BPETokenizer

    docs = list(shared_documents().values())
    train, held = split_heldout(docs)
    train_mb = sum(len(d.encode()) for d in train) / 1e6
    held_bytes = sum(len(d.encode()) for d in held)
    print(header("BBPE trainer vs HF tokenizers ByteLevel BPE trainer"))
    print(f"train {train_mb:.2f} MB in {len(train)} documents, held-out {held_bytes / 1e6:.2f} MB\n")
    print("| vocab | ours s (count + merge) | HF s | ours/HF time | ours B/token | HF B/token | compression gap | same merges | sentencepiece s, B/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        ours_t, count_t, merge_t, hf_t = [], [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            vocab = train_bbpe(size, documents=train, processes=args.processes, progress=False)
            ours_t.append(time.perf_counter() - start)
            count_t.append(vocab.meta["trainer"]["seconds_count"])
            merge_t.append(vocab.meta["trainer"]["seconds_merge"])
            hf, seconds = train_hf(train, size)
            hf_t.append(seconds)
        ours_tok = BPETokenizer(f"bench{size}", vocab.ranks(), vocab.special_tokens, "bench", "")
        ours_bpt = held_bytes / sum(len(ours_tok.encode(d)) for d in held)
        hf_bpt = held_bytes / sum(len(e.ids) for e in hf.encode_batch(held))
        hf_merges = json.loads(hf.to_str())["model"]["merges"]
        hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in hf_merges]
        ours_merges = [(token_to_str(a), token_to_str(b)) for a, b in vocab.merges]
        same = next((i for i, (a, b) in enumerate(zip(ours_merges, hf_merges)) if a != b), min(len(ours_merges), len(hf_merges)))
        start = time.perf_counter()
        spv = train_sentencepiece(size, documents=train)
        sp_t = time.perf_counter() - start
        sp = SentencePieceTokenizer("bench", spv.model, "", "")
        sp_bpt = held_bytes / sum(len(sp.encode(d)) for d in held)
        o, h = statistics.median(ours_t), statistics.median(hf_t)
        print(f"| {size} | {o:.2f} ({statistics.median(count_t):.2f} + {statistics.median(merge_t):.2f}) | {h:.2f} | "
              f"{o / h:.2f} | {ours_bpt:.4f} | {hf_bpt:.4f} | {100 * (ours_bpt / hf_bpt - 1):+.3f}% | "
              f"{same}/{len(hf_merges)} | {sp_t:.2f}, {sp_bpt:.4f} |")


if __name__ == "__main__":
    main()
