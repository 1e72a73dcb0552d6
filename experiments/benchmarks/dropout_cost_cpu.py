"""What dropout costs a CPU train step: the step with all three dropouts at 0.1 against the same step
with dropout off, timed in interleaved rounds in one process (the peer is the dropout-free step).

Run it once per source tree to compare dropout implementations (e.g. the Philox masks this
project drew before, against the mesh-independent hash masks of gpt2_jax/dropout.py): the ratio
"with / without dropout" is what each implementation adds, free of the machine's speed.

    PYTHONPATH=$PWD .venv/bin/python experiments/benchmarks/dropout_cost_cpu.py [--rounds 8]

Config: the train_step_cpu.py shape (6 layers, 384 wide, 6 heads, T=256, batch 8, vocabulary
50257, float32), attention=xla, scanned layers, one CPU device (as a default CPU run has).
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
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    args = ap.parse_args()
    load_start = os.getloadavg()

    import dataclasses

    import jax
    import jax.numpy as jnp

    import gpt2_jax
    from gpt2_jax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from gpt2_jax.model import init_params
    from gpt2_jax.optim import make_optimizer
    from gpt2_jax.train import TrainState, make_train_step

    model = ModelConfig(n_layer=6, n_embd=384, n_head=6, n_ctx=args.seq, n_vocab=50257, attention="xla",
                        scan_layers=True, remat="none")
    cfg = TrainConfig(model=model, data=DataConfig(seq_len=args.seq), optim=OptimConfig(warmup_steps=0),
                      steps=10_000, batch_size=args.batch)
    tx = make_optimizer(cfg.optim, cfg.steps)
    params = jax.jit(lambda: init_params(model, jax.random.PRNGKey(0)))()
    variants = {"dropout 0.1": cfg, "no dropout": dataclasses.replace(cfg, model=dataclasses.replace(
        model, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))}
    batch = jnp.asarray(np.random.RandomState(0).randint(0, 50257, (args.batch, args.seq + 1)), jnp.int32)
    runs = {}
    for name, c in variants.items():
        step = jax.jit(make_train_step(c, tx, jax.random.PRNGKey(1)), donate_argnums=0)
        p = jax.tree_util.tree_map(jnp.copy, params)
        state = TrainState(jnp.zeros((), jnp.int32), p, tx.init(p))
        t0 = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        runs[name] = [step, state, time.perf_counter() - t0]
    times = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            step, state, _ = runs[name]
            t0 = time.perf_counter()
            state, _ = step(state, batch)
            jax.block_until_ready(state)
            times[name].append(time.perf_counter() - t0)
            runs[name][1] = state
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# dropout_cost_cpu  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  gpt2_jax from {os.path.dirname(gpt2_jax.__file__)}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; jax {jax.__version__}, {jax.device_count()} device")
    print(f"model: L=6 D=384 N=6 T={args.seq} B={args.batch} V=50257 float32; {args.rounds} interleaved rounds, median")
    print("| variant | ms/step | per round | compile s |\n|---|---:|---|---:|")
    for name in runs:
        print(f"| {name} | {1e3 * med[name]:.0f} | {', '.join(f'{1e3 * t:.0f}' for t in times[name])} | {runs[name][2]:.1f} |")
    paired = statistics.median(a / b for a, b in zip(times["dropout 0.1"], times["no dropout"]))
    print(f"\ndropout cost: with / without = {med['dropout 0.1'] / med['no dropout']:.3f} (paired per round {paired:.3f})")


if __name__ == "__main__":
    main()
