"""Evaluation throughput: our scorer vs lm-evaluation-harness's `hf` model, same model, data, CPU.

Both score the same documents with lm-eval's rolling windows (stride = n_ctx) on the same random
GPT-2 (real 50257-token vocabulary) in the same process: ours through
`gpt2_jax.evaluate.scorer.Scorer` (jitted, batched, fixed shapes), lm-eval through
`HFLM.loglikelihood_rolling` on the Hugging Face directory the same weights were imported from.
Rounds alternate (ours, lm-eval, ours, ...) so machine load hits both alike; the first round of
each is a warm-up (our compile, torch's first calls) and is not counted. Tokens/s = scored tokens
/ wall seconds of the scoring call (tokenization included for both). The summed log-likelihoods
are printed too: they must agree (relative difference ~1e-7), or the comparison is void.

    python experiments/benchmarks/eval_throughput.py [--layers 4 --embd 256 --ctx 256 --kb 40 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests"))

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--kb", type=int, default=40, help="KB of tinyshakespeare, split into 4 documents")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import io
    from contextlib import redirect_stdout

    import torch
    from conftest import make_hf_reference  # the tests' random HF GPT-2 (perturbed biases)
    from machine import cpu_model

    from gpt2_jax import checkpoint
    from gpt2_jax.cli import main as cli
    from gpt2_jax.evaluate.scorer import Scorer
    from gpt2_jax.evaluate.windows import rolling_spans
    from gpt2_jax.tokenizer import load_tokenizer
    from transformers import GPT2Tokenizer

    root = pathlib.Path(tempfile.mkdtemp(prefix="eval_bench_"))
    assets = pathlib.Path(__file__).resolve().parents[2] / "gpt2_jax" / "assets"
    make_hf_reference(root / "hf", seed=0, vocab_size=50257, n_positions=args.ctx, n_embd=args.embd,
                      n_layer=args.layers, n_head=args.heads)
    GPT2Tokenizer(vocab=str(assets / "gpt2" / "encoder.json"), merges=str(assets / "gpt2" / "vocab.bpe")).save_pretrained(root / "hf")
    with redirect_stdout(io.StringIO()):
        cli(["import-hf", str(root / "hf"), "--out", str(root / "ckpt")])
    _, cfg, params, _ = checkpoint.restore(root / "ckpt")

    text = (assets / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")[: args.kb * 1000]
    quarter = len(text) // 4
    docs = [text[i * quarter:(i + 1) * quarter] for i in range(4)]
    tok = load_tokenizer("gpt2")

    scorer = Scorer(cfg.model, params, batch_size=args.batch_size, progress=False, devices=None)

    def ours() -> tuple[float, int]:
        spans = (s for i, d in enumerate(docs) for s in rolling_spans(i, tok.encode(d), tok.eot_id, cfg.model.n_ctx, cfg.model.n_ctx))
        total, n = 0.0, 0
        for r in scorer.score(spans):
            total += r.logprob
            n += r.n_scored
        return total, n

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(root / "hf"), dtype="float32", device="cpu", batch_size=args.batch_size)
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(d,), idx=i) for i, d in enumerate(docs)]

    def theirs() -> tuple[float, int]:
        return sum(lm.loglikelihood_rolling(requests, disable_tqdm=True)), 0

    timings = {"ours": [], "lm-eval": []}
    results = {}
    for r in range(args.rounds + 1):
        for name, fn in (("ours", ours), ("lm-eval", theirs)):
            start = time.perf_counter()
            ll, n = fn()
            elapsed = time.perf_counter() - start
            results[name] = ll
            if n:
                results["tokens"] = n
            if r > 0:
                timings[name].append(elapsed)
            print(f"round {r} {name:8s} {elapsed:7.2f} s  loglik {ll:.6f}" + ("  (warm-up)" if r == 0 else ""), flush=True)
    tokens = results["tokens"]
    med = {k: statistics.median(v) for k, v in timings.items()}
    rel = abs(results["ours"] - results["lm-eval"]) / abs(results["lm-eval"])
    print()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"model L{args.layers} D{args.embd} H{args.heads} n_ctx {args.ctx} vocab 50257; {len(docs)} documents, "
          f"{tokens} tokens; batch {args.batch_size}; {args.rounds} timed rounds (median)")
    print(f"summed log-likelihood: ours {results['ours']:.4f}, lm-eval {results['lm-eval']:.4f}, relative difference {rel:.2e}")
    print("| scorer | tokens/s |")
    print("|---|---:|")
    for name in ("ours", "lm-eval"):
        print(f"| {name} | {tokens / med[name]:,.0f} |")
    print(f"ratio ours/lm-eval: {med['lm-eval'] / med['ours']:.2f}x")


if __name__ == "__main__":
    main()
