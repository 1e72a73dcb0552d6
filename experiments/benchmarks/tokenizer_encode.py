"""Encode throughput (MB/s of UTF-8 input) with the official GPT-2 vocabulary: ours vs tiktoken vs
Hugging Face `tokenizers`, one process and all cores, in the same run.

Input: every text in ../shared/data, cut into documents of about 64 KB (at pre-token-safe
points) so that batch APIs have work to spread. All three are built offline from the same two
official files and must produce identical ids (checked before timing). Rows:
  ours encode          `Tokenizer.encode` per document (tiktoken's engine behind our wrapper)
  ours encode_batch    `Tokenizer.encode_batch`, one thread per core
  ours encode_corpus   `parallel.encode_corpus`, one process per core (uint16 arrays back;
                       includes process start-up, which dominates at this corpus size)
  tiktoken             `encode_ordinary` per document / `encode_ordinary_batch` (threads)
  HF tokenizers        `Tokenizer.encode` per document (one thread) / `encode_batch` (Rust, all cores)
Timings are interleaved rounds; the table shows the median. The sentencepiece backend (a
vocabulary of the same size trained on the same text) is listed for the vocabulary ablations.

    .venv/bin/python experiments/benchmarks/tokenizer_encode.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from tokenizer_common import header, shared_documents


def chunk(docs: list[str], size: int = 64_000) -> list[str]:
    from gpt2_jax.tokenizer.pretokenize import safe_cut

    out = []
    for doc in docs:
        while len(doc) > size:
            cut = safe_cut(doc[:size]) or size
            out.append(doc[:cut])
            doc = doc[cut:]
        out.append(doc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sentencepiece", action="store_true", help="also time a sentencepiece vocabulary of 50257 pieces")
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from gpt2_jax.tokenizer import load_tokenizer
    from gpt2_jax.tokenizer.parallel import encode_corpus
    from gpt2_jax.tokenizer.pretokenize import default_processes
    from gpt2_jax.tokenizer.vocab import bundled_dir

    cores = default_processes()
    docs = chunk(list(shared_documents().values()))
    total_mb = sum(len(d.encode()) for d in docs) / 1e6
    ours = load_tokenizer("gpt2")
    d = bundled_dir("gpt2")
    ranks = data_gym_to_mergeable_bpe_ranks(str(d / "vocab.bpe"), str(d / "encoder.json"))
    tik = tiktoken.Encoding("gpt2_ref", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    hf = HFTokenizer(models.BPE.from_file(str(d / "encoder.json"), str(d / "vocab.bpe")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()

    expected = [ours.encode(x) for x in docs]
    assert [tik.encode_ordinary(x) for x in docs] == expected
    assert [e.ids for e in hf.encode_batch(docs)] == expected
    n_tokens = sum(map(len, expected))

    runs = {
        ("ours", "1 process"): lambda: [ours.encode(x) for x in docs],
        ("tiktoken", "1 process"): lambda: [tik.encode_ordinary(x) for x in docs],
        ("HF tokenizers", "1 process"): lambda: [hf.encode(x) for x in docs],
        ("ours encode_batch (threads)", f"{cores} cores"): lambda: ours.encode_batch(docs, num_threads=cores),
        ("ours encode_corpus (processes)", f"{cores} cores"): lambda: list(encode_corpus(ours, docs, processes=cores)),
        ("tiktoken (threads)", f"{cores} cores"): lambda: tik.encode_ordinary_batch(docs, num_threads=cores),
        ("HF tokenizers encode_batch", f"{cores} cores"): lambda: hf.encode_batch(docs),
    }
    if args.sentencepiece:
        from gpt2_jax.tokenizer.sentencepiece_backend import SentencePieceTokenizer, train_sentencepiece

        sp = SentencePieceTokenizer("sp", train_sentencepiece(50257, documents=docs).model, "", "")
        runs[("sentencepiece backend", "1 process")] = lambda: [sp.encode(x) for x in docs]
        runs[("sentencepiece backend encode_batch", f"{cores} cores")] = lambda: sp.encode_batch(docs, num_threads=cores)
    times: dict = {k: [] for k in runs}
    for _ in range(args.rounds):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)

    print(header("Encode throughput, GPT-2 vocabulary"))
    print(f"{total_mb:.2f} MB in {len(docs)} documents, {n_tokens:,} tokens; ids identical across the three\n")
    print("| encoder | parallelism | MB/s | vs tiktoken (same parallelism) |")
    print("|---|---|---|---|")
    base = {"1 process": statistics.median(times[("tiktoken", "1 process")]),
            f"{cores} cores": statistics.median(times[("tiktoken (threads)", f"{cores} cores")])}
    for (name, par), ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {par} | {total_mb / t:.1f} | {base[par] / t:.2f} |")


if __name__ == "__main__":
    main()
