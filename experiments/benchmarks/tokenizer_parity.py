"""Token-id parity on every whole text in ../shared/data (the tests use 64 KB samples of them).

1. The bundled `gpt2` vocabulary vs tiktoken's GPT-2 definition (r50k pattern) and HF's
   GPT2Tokenizer, both built offline from the official encoder.json + vocab.bpe.
2. A vocabulary trained here on all of those texts (--vocab-size, default 32768), written as
   encoder.json + vocab.bpe + vocab.tiktoken, then read back by tiktoken (both of its readers)
   and HF's GPT2Tokenizer.
Each row: documents, bytes, tokens, documents whose ids differ from ours, documents where
decode(encode(x)) != x.

    .venv/bin/python experiments/benchmarks/tokenizer_parity.py [--vocab-size 32768]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from tokenizer_common import header, shared_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-size", type=int, default=32768)
    args = ap.parse_args()

    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str
    from transformers import GPT2Tokenizer

    from gpt2_jax.tokenizer import load_tokenizer, train_bbpe
    from gpt2_jax.tokenizer.vocab import bundled_dir

    docs = shared_documents()
    texts = list(docs.values())
    n_bytes = sum(len(t.encode()) for t in texts)
    print(header("Token-id parity on ../shared/data"))
    print(f"{len(texts)} documents, {n_bytes / 1e6:.2f} MB\n")
    print("| vocabulary | reference | tokens | docs with different ids | round-trip failures |")
    print("|---|---|---|---|---|")

    def compare(label: str, ours, refs: dict) -> None:
        ids = [ours.encode(t) for t in texts]
        bad_rt = sum(ours.decode(i) != t for i, t in zip(ids, texts))
        for name, enc in refs.items():
            diff = [k for k, t, i in zip(docs, texts, ids) if enc(t) != i]
            print(f"| {label} | {name} | {sum(map(len, ids)):,} | {len(diff)} {diff[:3] if diff else ''} | {bad_rt} |")

    def refs_for(directory, special_id: int) -> dict:
        enc_json, bpe = str(directory / "encoder.json"), str(directory / "vocab.bpe")
        ranks = data_gym_to_mergeable_bpe_ranks(bpe, enc_json)
        refs = {"tiktoken (encoder.json + vocab.bpe)": tiktoken.Encoding(
            "ref_a", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": special_id}).encode_ordinary}
        if (directory / "vocab.tiktoken").is_file():
            rank_file = load_tiktoken_bpe(str(directory / "vocab.tiktoken"))
            refs["tiktoken (vocab.tiktoken)"] = tiktoken.Encoding(
                "ref_b", pat_str=r50k_pat_str, mergeable_ranks=rank_file, special_tokens={"<|endoftext|>": special_id}).encode_ordinary
        hf = GPT2Tokenizer(vocab=enc_json, merges=bpe)
        refs["HF GPT2Tokenizer"] = lambda t: hf.encode(t)
        return refs

    compare("gpt2 (bundled)", load_tokenizer("gpt2"), refs_for(bundled_dir("gpt2"), 50256))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        vocab = train_bbpe(args.vocab_size, documents=texts, progress=False)
        seconds = time.perf_counter() - start
        out = vocab.save(f"{tmp}/trained")
        compare(f"trained here, {args.vocab_size} ({seconds:.1f} s)", load_tokenizer(str(out)),
                refs_for(out, args.vocab_size - 1))


if __name__ == "__main__":
    main()
