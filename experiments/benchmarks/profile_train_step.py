"""Where the CPU train step's time goes: times jitted pieces of it in isolation (min of N runs).

Same config as train_step_cpu.py (L=6, D=384, N=6, T=256, B=8, V=50257, dropout 0.1, float32).

    .venv/bin/python experiments/benchmarks/profile_train_step.py [--reps 3] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    from gpt2_jax.attention import dot_product_attention
    from gpt2_jax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from gpt2_jax.model import GPT, init_params
    from gpt2_jax.optim import make_optimizer
    from gpt2_jax.train import TrainState, cross_entropy, make_train_step

    mc = ModelConfig(n_layer=6, n_embd=384, n_head=6, n_ctx=256)
    B, T, D, V = 8, 256, mc.n_embd, mc.n_vocab_padded
    cfg = TrainConfig(model=mc, data=DataConfig(seq_len=T), batch_size=B, steps=100,
                      optim=OptimConfig(lr=6e-4, min_lr_ratio=1.0, warmup_steps=0))
    params = jax.jit(lambda k: init_params(mc, k))(jax.random.PRNGKey(0))
    tx = make_optimizer(cfg.optim, cfg.steps)
    batch = jnp.asarray(np.random.RandomState(0).randint(0, mc.n_vocab, size=(B, T + 1)).astype(np.int32))
    rng = jax.random.PRNGKey(1)
    model = GPT(mc)

    def loss_train(p, b, r):
        return cross_entropy(model.apply({"params": p}, b[:, :-1], deterministic=False, rngs={"dropout": r})[0], b[:, 1:])

    def loss_det(p, b):
        return cross_entropy(model.apply({"params": p}, b[:, :-1])[0], b[:, 1:])

    x = jax.random.normal(rng, (B, T, D))
    targets = batch[:, 1:]
    wte = params["wte"]["embedding"]

    def head_loss(x, wte):  # as in the model: the tied head on [B * T, D]
        logits = (x.reshape(B * T, D) @ wte.T).reshape(B, T, V)
        real = jnp.arange(V) < mc.n_vocab
        logits = jnp.where(real, logits, jnp.finfo(jnp.float32).min)
        return cross_entropy(logits, targets)

    q = jax.random.normal(rng, (B, T, mc.n_head, mc.head_dim))

    def attn_loss(q, k, v, r, rate):
        return dot_product_attention(q, k, v, causal=True, dropout_rate=rate, dropout_rng=r).sum()

    def masks(r):
        attn = sum(jax.random.bernoulli(jax.random.fold_in(r, i), 0.9, (B, mc.n_head, T, T)).sum() for i in range(6))
        return attn + sum(jax.random.bernoulli(jax.random.fold_in(r, 100 + i), 0.9, (B, T, D)).sum() for i in range(13))

    grads = jax.tree_util.tree_map(lambda p: 1e-3 * jnp.ones_like(p), params)
    opt_state = tx.init(params)

    def opt_update(g, s, p):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = make_train_step(cfg, tx, rng)
    if not hasattr(step, "lower"):  # the pure step (train.Trainer jits it with shardings)
        step = jax.jit(step, donate_argnums=0)
    state = TrainState(jnp.zeros((), jnp.int32), jax.tree_util.tree_map(jnp.copy, params), tx.init(params))  # donated

    h = jax.random.normal(rng, (B, T, 4 * D))
    w = jax.random.normal(rng, (D, 4 * D))

    pieces = {
        "value_and_grad loss (dropout)": (jax.jit(jax.value_and_grad(loss_train)), (params, batch, rng)),
        "value_and_grad loss (no dropout)": (jax.jit(jax.value_and_grad(loss_det)), (params, batch)),
        "forward+loss (dropout)": (jax.jit(loss_train), (params, batch, rng)),
        "forward+loss (no dropout)": (jax.jit(loss_det), (params, batch)),
        "lm head+CE fwd+bwd": (jax.jit(jax.value_and_grad(head_loss, argnums=(0, 1))), (x, wte)),
        "lm head+CE fwd": (jax.jit(head_loss), (x, wte)),
        "lm head matmul only": (jax.jit(lambda x, w: x.reshape(B * T, D) @ w.T), (x, wte)),
        "attention x6 fwd+bwd (dropout)": (jax.jit(lambda q, r: sum(jax.grad(attn_loss, argnums=(0, 1, 2))(q, q, q, jax.random.fold_in(r, i), 0.1)[0].sum() for i in range(6))), (q, rng)),
        "attention x6 fwd+bwd (no dropout)": (jax.jit(lambda q, r: sum(jax.grad(attn_loss, argnums=(0, 1, 2))(q * (i + 1), q, q, r, 0.0)[0].sum() for i in range(6))), (q, rng)),
        "dropout masks only, threefry (6 attn + 13 resid/emb)": (jax.jit(masks), (rng,)),
        "dropout masks only, philox4x32": (jax.jit(masks), (jax.random.key(1, impl="philox4x32"),)),
        "optimizer update (clip+adamw)": (jax.jit(opt_update), (grads, opt_state, params)),
        "train_step (full)": None,
        "mlp c_fc matmul fwd x6 (2048x384x1536)": (jax.jit(lambda x, w: sum((x[..., :D] * (i + 1)) @ w for i in range(6))), (h, w)),
    }
    only = [s for s in args.only.split(",") if s]
    print(f"jax {jax.__version__}; min of {args.reps} runs after one warmup (ms)")
    for name, item in pieces.items():
        if only and not any(o in name for o in only):
            continue
        if item is None:
            state, m = step(state, batch)
            jax.block_until_ready(m)
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                state, m = step(state, batch)
                jax.block_until_ready(m)
                ts.append(time.perf_counter() - t0)
        else:
            fn, a = item
            jax.block_until_ready(fn(*a))
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*a))
                ts.append(time.perf_counter() - t0)
        print(f"{name:52s} {1000 * min(ts):8.1f}   (all: {', '.join(f'{1000 * t:.0f}' for t in ts)})", flush=True)


if __name__ == "__main__":
    main()
