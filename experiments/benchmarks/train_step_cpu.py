"""Training throughput on CPU: our jitted train step vs Hugging Face GPT2LMHeadModel + torch AdamW.

Same config on both sides (6 layers, 384 wide, 6 heads, T=256, batch 8, GPT-2 vocabulary 50257,
dropout 0.1 everywhere, float32), same initial weights (HF's random init loaded into ours via
gpt2_jax.export), same work per step: forward, mean next-token cross-entropy, backward,
global-norm clipping at 1.0, AdamW update (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on
matrices and embeddings only, constant lr). Both are warmed up, then timed in interleaved rounds
(A B A B ...) so machine noise hits both alike. The table reports the median round.

    .venv/bin/python experiments/benchmarks/train_step_cpu.py [--rounds 6] [--steps 1] [--unrolled]
    taskset -c 1 .venv/bin/python experiments/benchmarks/train_step_cpu.py   # both sides on one core

Both sides use every core the process may use (torch threads = CPU affinity; XLA sizes its pool
the same way), so `taskset` gives each the same budget. XLA flags are read from XLA_FLAGS as usual
(printed in the header, with the load average: on a shared machine, compare ratios, not times).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import numpy as np
from machine import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds per implementation")
    ap.add_argument("--steps", type=int, default=1, help="optimizer steps per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation (after compile)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--hf-attn", default="sdpa", help="HF attn_implementation (sdpa is the transformers default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unrolled", action="store_true",
                    help="also time our step with model.scan_layers=False (same parameters, layers unrolled)")
    args = ap.parse_args()
    load_start = os.getloadavg()

    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from gpt2_jax.config import ModelConfig, OptimConfig, TrainConfig, DataConfig
    from gpt2_jax.export import hf_state_to_params
    from gpt2_jax.optim import make_optimizer
    from gpt2_jax.train import TrainState, cross_entropy, make_train_step
    from gpt2_jax.model import GPT

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # all the cores this process may use (see taskset)
    torch.manual_seed(args.seed)

    model_cfg = ModelConfig(n_layer=6, n_embd=384, n_head=6, n_ctx=256, n_vocab=50257,
                            embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1)
    lr, wd, betas, eps, clip = 6e-4, 0.1, (0.9, 0.95), 1e-8, 1.0
    optim_cfg = OptimConfig(lr=lr, min_lr_ratio=1.0, warmup_steps=0, weight_decay=wd,
                            beta1=betas[0], beta2=betas[1], eps=eps, grad_clip=clip)  # constant lr
    total_steps = args.warmup + args.rounds * args.steps + 1
    cfg = TrainConfig(model=model_cfg, data=DataConfig(seq_len=args.seq), optim=optim_cfg,
                      steps=total_steps, batch_size=args.batch, seed=args.seed)
    B, T, V = args.batch, args.seq, model_cfg.n_vocab
    tokens_per_step = B * T

    # ---- Hugging Face side
    hf_config = transformers.GPT2Config(
        vocab_size=V, n_positions=model_cfg.n_ctx, n_embd=model_cfg.n_embd, n_layer=model_cfg.n_layer,
        n_head=model_cfg.n_head, activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1,
        attn_pdrop=0.1, layer_norm_epsilon=1e-5, bos_token_id=V - 1, eos_token_id=V - 1,
        attn_implementation=args.hf_attn,
    )
    hf = transformers.GPT2LMHeadModel(hf_config)
    hf.train()
    decay = [p for n, p in hf.named_parameters() if p.ndim >= 2]  # Conv1D weights, wte, wpe
    no_decay = [p for n, p in hf.named_parameters() if p.ndim < 2]  # biases, LayerNorm
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
        fused = "fused"
    except (RuntimeError, TypeError) as e:  # fused AdamW not supported for this device/build
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
        fused = f"default ({e})"

    # ---- our side, from the same initial weights
    state_dict = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    params = jax.tree_util.tree_map(jnp.asarray, hf_state_to_params(state_dict, model_cfg))
    tx = make_optimizer(cfg.optim, cfg.steps)

    def jitted_step(cfg):
        step = make_train_step(cfg, tx, jax.random.PRNGKey(args.seed))
        if not hasattr(step, "lower"):  # the pure step (train.Trainer jits it with shardings)
            step = jax.jit(step, donate_argnums=0)
        return step

    ours_cfgs = {"ours": cfg}
    if args.unrolled:
        ours_cfgs["ours_unrolled"] = dataclasses.replace(cfg, model=dataclasses.replace(model_cfg, scan_layers=False))
    ours = {}  # name -> [jitted step, state, steps taken]
    for name, c in ours_cfgs.items():
        p = jax.tree_util.tree_map(jnp.copy, params)  # each state is donated to its own step
        ours[name] = [jitted_step(c), TrainState(jnp.zeros((), jnp.int32), p, tx.init(p)), 0]

    rs = np.random.RandomState(args.seed)
    batches = [rs.randint(0, V, size=(B, T + 1)).astype(np.int32) for _ in range(8)]
    jax_batches = [jnp.asarray(b) for b in batches]
    torch_batches = [(torch.from_numpy(b[:, :-1].astype(np.int64)), torch.from_numpy(b[:, 1:].astype(np.int64)))
                     for b in batches]

    # sanity: same weights -> same deterministic loss
    eval_loss = jax.jit(lambda p, b: cross_entropy(GPT(model_cfg).apply({"params": p}, b[:, :-1])[0], b[:, 1:]))
    ours0 = float(eval_loss(params, jax_batches[0]))
    hf.eval()
    with torch.no_grad():
        x, y = torch_batches[0]
        hf0 = float(torch.nn.functional.cross_entropy(hf(input_ids=x).logits.flatten(0, 1), y.flatten()))
    hf.train()

    hf_steps = [0]

    def hf_step() -> float:
        x, y = torch_batches[hf_steps[0] % len(torch_batches)]
        hf_steps[0] += 1
        opt.zero_grad(set_to_none=True)
        logits = hf(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), clip)
        opt.step()
        return float(loss.detach())

    def our_step(name: str) -> dict:
        entry = ours[name]
        entry[1], metrics = entry[0](entry[1], jax_batches[entry[2] % len(jax_batches)])
        entry[2] += 1
        return metrics

    def run(name: str, n: int) -> float:
        t0 = time.perf_counter()
        if name == "hf":
            for _ in range(n):
                hf_step()
        else:
            for _ in range(n):
                our_step(name)
            jax.block_until_ready(ours[name][1])
        return time.perf_counter() - t0

    compile_s, first_loss = {}, {}
    for name in ours:
        t0 = time.perf_counter()
        first_loss[name] = float(our_step(name)["loss"])
        compile_s[name] = time.perf_counter() - t0
    first_loss["hf"] = hf_step()
    names = [*ours, "hf"]
    for name in names:
        run(name, args.warmup)

    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(run(name, args.steps) / args.steps)
    last_loss = {name: float(our_step(name)["loss"]) for name in ours}
    last_loss["hf"] = hf_step()
    load_end = os.getloadavg()

    n_params = sum(p.numel() for p in hf.parameters())
    print(f"# train_step_cpu  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, affinity {len(os.sched_getaffinity(0))}; "
          f"load average (1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')!r}  "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
    print(f"model: L={model_cfg.n_layer} D={model_cfg.n_embd} N={model_cfg.n_head} T={T} B={B} V={V} "
          f"(ours padded to {model_cfg.n_vocab_padded}), {n_params:,} params, dropout 0.1, float32")
    print(f"HF attn_implementation={hf.config._attn_implementation}, torch AdamW {fused}; our first step "
          f"(compile): " + ", ".join(f"{k} {v:.1f}s" for k, v in compile_s.items()))
    print(f"same weights check (deterministic loss, batch 0): ours {ours0:.5f}  HF {hf0:.5f}  |diff| {abs(ours0 - hf0):.2e}")
    print("first train-step loss: " + ", ".join(f"{k} {v:.4f}" for k, v in first_loss.items())
          + f"; at step {hf_steps[0]} (same batch as step 1): " + ", ".join(f"{k} {v:.4f}" for k, v in last_loss.items()))
    print(f"timing: {args.warmup} warmup steps each, then {args.rounds} interleaved rounds x {args.steps} steps; "
          f"median round; 'paired' = median over rounds of (HF time / our time) in the same round")
    print()
    med = {k: statistics.median(v) for k, v in times.items()}
    labels = {"ours": "gpt2_jax make_train_step (jit)",
              "ours_unrolled": "gpt2_jax make_train_step (jit), scan_layers=False",
              "hf": "HF GPT2LMHeadModel + torch AdamW"}
    paired = {name: statistics.median(h / t for h, t in zip(times["hf"], times[name])) for name in names}
    print("| impl | tokens/s | ms/step | ms/step per round | ratio ours/HF | paired |")
    print("|---|---:|---:|---|---:|---:|")
    for name in names:
        rounds = ", ".join(f"{1000 * t:.0f}" for t in times[name])
        print(f"| {labels[name]} | {tokens_per_step / med[name]:,.0f} | {1000 * med[name]:.0f} | {rounds} | "
              f"{med['hf'] / med[name]:.2f} | {paired[name]:.2f} |")
    print()
    for name in ours:
        print(f"ratio {name}/HF (tokens/s): {med['hf'] / med[name]:.2f}x (paired {paired[name]:.2f}x)")


if __name__ == "__main__":
    main()
