"""Greedy sampling throughput on CPU: gpt2_jax.sample.generate vs Hugging Face model.generate.

Same model on both sides (6 layers, 384 wide, 6 heads, n_ctx 256, GPT-2 vocabulary 50257,
float32), same weights (HF's random init loaded into ours via gpt2_jax.export), a 16-token
prompt, 128 new tokens, greedy (`do_sample=False`), HF with its KV cache. Our compile time is
excluded by a warm-up call with the same shapes; both sides are then timed in interleaved rounds
and the table reports the median round. Tokens/s counts new tokens (batch x 128).
The greedy continuations are compared token for token.

    .venv/bin/python experiments/benchmarks/sample_cpu.py [--batches 1,8] [--rounds 3]
    taskset -c 1 .venv/bin/python experiments/benchmarks/sample_cpu.py   # both sides on one core

torch uses as many threads as the process has cores (its affinity), like XLA. On a shared,
loaded machine torch's 2-thread decode stalls on its OpenMP barriers (each tiny op waits for a
descheduled thread), so the one-core run is the fairer comparison there; both are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from machine import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_start = os.getloadavg()

    import jax
    import torch
    import transformers

    from gpt2_jax.config import ModelConfig
    from gpt2_jax.export import hf_state_to_params
    from gpt2_jax.sample import generate

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # all the cores this process may use (see taskset)
    torch.manual_seed(args.seed)
    cfg = ModelConfig(n_layer=6, n_embd=384, n_head=6, n_ctx=256, n_vocab=50257)
    V = cfg.n_vocab
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=V, n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=V - 1, eos_token_id=V - 1,
    )).eval()
    # Never stop early at <|endoftext|>: both sides must produce exactly `--new` tokens.
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    state_dict = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    params = jax.tree_util.tree_map(jax.numpy.asarray, hf_state_to_params(state_dict, cfg))

    batches = [int(b) for b in args.batches.split(",")]
    rs = np.random.RandomState(args.seed)
    prompts = {b: rs.randint(0, V, size=(b, args.prompt_len)).astype(np.int32) for b in batches}

    def ours(b):
        return generate(params, cfg, prompts[b], max_new_tokens=args.new, greedy=True)

    def theirs(b):
        x = torch.from_numpy(prompts[b].astype(np.int64))
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=args.new,
                              min_new_tokens=0, use_cache=True)
        return out.numpy()

    rows, same = [], {}
    compile_s = {}
    for b in batches:
        t0 = time.perf_counter()
        out_ours = ours(b)  # compiles this (batch, prompt, new) shape
        compile_s[b] = time.perf_counter() - t0
        out_hf = theirs(b)  # warm-up
        assert out_hf.shape == out_ours.shape == (b, args.prompt_len + args.new), (out_hf.shape, out_ours.shape)
        equal = out_ours == out_hf
        first_diff = None if equal.all() else int(np.argwhere(~equal.all(0))[0, 0]) - args.prompt_len
        same[b] = (bool(equal.all()), first_diff)
        times = {"ours": [], "hf": []}
        for r in range(args.rounds):
            order = (("ours", ours), ("hf", theirs)) if r % 2 == 0 else (("hf", theirs), ("ours", ours))
            for name, fn in order:
                t0 = time.perf_counter()
                fn(b)
                times[name].append(time.perf_counter() - t0)
        rows.append((b, times))

    load_end = os.getloadavg()
    print(f"# sample_cpu  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, affinity {len(os.sched_getaffinity(0))}; "
          f"load average (1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"model: L={cfg.n_layer} D={cfg.n_embd} N={cfg.n_head} n_ctx={cfg.n_ctx} V={V}, float32; greedy, prompt "
          f"{args.prompt_len} tokens, {args.new} new tokens; HF attn_implementation={hf.config._attn_implementation}, "
          f"KV cache on")
    print("our compile (first call, excluded): " + ", ".join(f"batch {b}: {s:.1f}s" for b, s in compile_s.items()))
    for b, (ok, first) in same.items():
        print(f"greedy outputs identical, batch {b}: {ok}" + ("" if ok else f" (first difference at new token {first})"))
    print(f"timing: {args.rounds} interleaved rounds per batch size, median round; tokens/s = new tokens / time; "
          f"best-round ratio = fastest HF round / fastest of ours (robust to load spikes that hit one side)")
    print()
    print("| batch | impl | new tokens/s | s per generate | rounds (s) | ratio ours/HF | best-round ratio |")
    print("|---:|---|---:|---:|---|---:|---:|")
    for b, times in rows:
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        for name, label in (("ours", "gpt2_jax sample.generate (jit, scan)"), ("hf", "HF GPT2LMHeadModel.generate")):
            n = b * args.new
            rounds = ", ".join(f"{t:.2f}" for t in times[name])
            print(f"| {b} | {label} | {n / med[name]:,.0f} | {med[name]:.2f} | {rounds} | {med['hf'] / med[name]:.2f} | "
                  f"{best['hf'] / best[name]:.2f} |")
    print()
    for b, times in rows:
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        print(f"ratio ours/HF (tokens/s), batch {b}: {med['hf'] / med['ours']:.2f}x median, "
              f"{best['hf'] / best['ours']:.2f}x best round vs best round")


if __name__ == "__main__":
    main()
