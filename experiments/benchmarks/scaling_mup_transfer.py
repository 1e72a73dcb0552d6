"""μP learning-rate transfer: an LR sweep at several widths under SP and under μP.

Trains GPT-2 models of widths n_embd = 16, 32, 64, 128 (fixed depth 2, 4 heads, context 64,
byte vocabulary: tiny Shakespeare as raw bytes, 257 ids) over one grid of Adam learning rates
spaced by 2x, once with the standard parametrization and once with μP (base width 16, so both
are the same model at width 32), and prints the final validation loss of every run (nats per
byte, 16 fixed held-out batches from the last 10% of the corpus) with the best LR of each width.
Every run uses the library's own train step (train.make_train_step with optim.make_optimizer:
AdamW, warmup + cosine, clipping) with the same init and the same batches, so only width, LR and
the parametrization change; the LR grid of one width trains as one vmapped program (one compile
per width instead of one per run; the LR is a factor on the optimizer's output, which for AdamW
equals the run at that peak LR). Writes scaling_mup_transfer.csv and scaling_mup_transfer.png beside this
file (gpt2_jax.mup_transfer reads and plots them). The criterion of issue 20: under μP the
optimum moves by at most 2x across the 8x width range.

Command:   nice -n 10 python experiments/benchmarks/scaling_mup_transfer.py [--smoke]
           (--smoke: widths 32, 64, 3 LRs, 5 steps: checks the script, measures nothing)
Hardware:  any CPU; the full sweep is 2 x 4 widths x 7 LRs (2^-11..2^-5) = 56 runs of 200 steps of
           8 x 64 tokens (sized for <= 25 min on a loaded 2-core CPU: widths 32-256 at 200 steps took 137 s for
           width 32 alone under load, so the range was moved down to 16-128, still 8x; RESULTS.md).

References:
  Yang et al. 2022, "Tensor Programs V", Figure 1 (the same experiment on Transformers).
  gpt2_jax/mup.py (the parametrization), gpt2_jax/mup_transfer.py (table, optimum, plot).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--lrs", default="-11,-10,-9,-8,-7,-6,-5", help="log2 of the learning rates")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="2 widths, 3 LRs, 5 steps; writes into a temporary directory")
    ap.add_argument("--out", default=str(HERE / "scaling_mup_transfer"), help="output path without extension")
    args = ap.parse_args()
    if args.smoke:
        import tempfile

        args.widths, args.lrs, args.steps = "32,64", "-9,-8,-7", 5
        args.out = str(pathlib.Path(tempfile.mkdtemp()) / "scaling_mup_transfer")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(HERE.parents[1]))

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from gpt2_jax.config import ModelConfig, OptimConfig, TrainConfig
    from gpt2_jax.data.prepare import bundled_corpus
    from gpt2_jax.mup_transfer import format_table, optimum_lrs, plot_transfer, transfer_spread, write_table
    from gpt2_jax.model import init_params
    from gpt2_jax.optim import make_optimizer
    from gpt2_jax.train import TrainState, make_eval_step, make_train_step

    widths = [int(w) for w in args.widths.split(",")]
    lrs = [2.0 ** float(e) for e in args.lrs.split(",")]
    seq = 64
    data = np.frombuffer(bundled_corpus().read_bytes(), np.uint8).astype(np.int32)  # byte ids 0..255
    split = int(len(data) * 0.9)
    rng = np.random.RandomState(0)
    train_starts = rng.randint(0, split - seq - 1, size=(args.steps, args.batch))
    val_starts = rng.randint(split, len(data) - seq - 1, size=(16, args.batch))
    windows = lambda starts: np.stack([data[s:s + seq + 1] for s in starts])  # [B, T + 1]
    val_batches = np.stack([windows(row) for row in val_starts])  # [16, B, T + 1]

    def run(parametrization: str, width: int) -> list[float]:
        """Final validation loss for every LR of the grid; the grid is one vmapped program."""
        model = ModelConfig(n_vocab=257, n_ctx=seq, n_embd=width, n_head=4, n_layer=2, embd_pdrop=0.0,
                            attn_pdrop=0.0, resid_pdrop=0.0, parametrization=parametrization,
                            mup_base_width=widths[0] if parametrization == "mup" else 0)
        # The library's optimizer at peak LR 1, then x lr: AdamW's step (decay included) is linear in the
        # LR and its schedule is linear in the peak, so this is the run at peak lr; lr lives in the state.
        cfg = TrainConfig(model=model, optim=OptimConfig(lr=1.0, warmup_steps=args.steps // 10), steps=args.steps,
                          batch_size=args.batch, seed=0, workdir="")
        tx = optax.chain(make_optimizer(cfg.optim, cfg.steps, model), optax.inject_hyperparams(optax.scale)(step_size=1.0))
        step = make_train_step(cfg, tx, jax.random.key(1))
        eval_step = make_eval_step(cfg)

        def init(lr):
            params = init_params(model, jax.random.key(0))  # the same init for every LR
            opt_state = tx.init(params)
            opt_state[1].hyperparams["step_size"] = lr
            return TrainState(jnp.zeros((), jnp.int32), params, opt_state)

        train = jax.jit(jax.vmap(lambda state, batch: step(state, batch)[0], in_axes=(0, None)), donate_argnums=0)
        evaluate = jax.jit(jax.vmap(lambda params, batches: jax.lax.map(lambda b: eval_step(params, b), batches).mean(),
                                    in_axes=(0, None)))
        state = jax.jit(jax.vmap(init))(jnp.asarray(lrs, jnp.float32))
        for starts in train_starts:
            state = train(state, windows(starts))
        return [float(x) for x in evaluate(state.params, val_batches)]

    rows, start = [], time.perf_counter()
    for parametrization in ("sp", "mup"):
        for width in widths:
            t0 = time.perf_counter()
            for lr, loss in zip(lrs, run(parametrization, width)):
                rows.append({"parametrization": parametrization, "width": width, "lr": lr, "val_loss": loss})
            print(f"{parametrization:3} width {width:4}: " + " ".join(f"{r['val_loss']:.3f}" for r in rows[-len(lrs):]) +
                  f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    wall = time.perf_counter() - start
    csv_path = write_table(rows, args.out + ".csv")
    png_path = args.out + ".png"
    plot_transfer(rows, png_path, title=f"LR transfer, widths {widths[0]}-{widths[-1]}, {args.steps} steps")
    print()
    print(format_table(rows))
    mup_spread = transfer_spread(optimum_lrs(rows, "mup"))
    print(f"\nμP criterion (optimum moves <= 2x across widths {widths[0]}-{widths[-1]}): "
          f"{'holds' if mup_spread <= 2.0 else 'FAILS'} ({mup_spread:.1f}x on the grid)")
    print(f"{len(rows)} runs, {args.steps} steps each, {wall:.0f} s; wrote {csv_path} and {png_path}")


if __name__ == "__main__":
    main()
