"""Cost of checking the applied update for non-finite values (issue 22), against the old guard.

The step guard now also reduces `isfinite` over the updated parameters and optimizer state (a
read of about 3x the parameters per step). This times the jitted train step of one config with
that check and with it replaced by `True` (the loss and gradient-norm checks stay in both),
alternating the two in the same process, and prints the median step times and their ratio.

Command (2-core CPU, about 2 minutes):
  PYTHONPATH=$PWD JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=1 \
      python experiments/benchmarks/nan_guard_cost.py [model=mini ...overrides]

References:
  gpt2_jax/train.py make_train_step (the guard), gpt2_jax/finite.py.
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp

from machine import cpu_model  # this script's directory is on sys.path


def step_times(cfg, guard_update: bool, steps: int = 12) -> list[float]:
    from gpt2_jax import train

    real = train.all_finite
    train.all_finite = real if guard_update else (lambda tree: jnp.array(True))
    try:
        trainer = train.Trainer.build(cfg)
    finally:
        train.all_finite = real
    state = trainer.init_state()
    batch = jax.device_put(jnp.zeros((cfg.batch_size, cfg.seq_len + 1), jnp.int32), trainer.batch_sharding)
    state, metrics = trainer.train_step(state, batch)  # compile
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    from gpt2_jax.config import TrainConfig, apply_overrides

    cfg = apply_overrides(TrainConfig(), ["model=mini", "model.n_vocab=4096", "batch_size=8", "data.seq_len=128",
                                          *sys.argv[1:]])
    runs = {True: [], False: []}
    for _ in range(2):  # alternate, so both see the same background load
        for guard in (False, True):
            runs[guard] += step_times(cfg, guard)
    old, new = statistics.median(runs[False]), statistics.median(runs[True])
    print(f"machine: {cpu_model()}, {jax.device_count()} device(s); model {cfg.model.n_layer}L {cfg.model.n_embd}D, "
          f"batch {cfg.batch_size} x {cfg.seq_len}")
    print(f"{'guard':<40} {'median step (ms)':>17}")
    print(f"{'loss + grad norm (before issue 22)':<40} {1e3 * old:>17.1f}")
    print(f"{'+ updated params and opt state':<40} {1e3 * new:>17.1f}")
    print(f"ratio new/old: {new / old:.3f}")


if __name__ == "__main__":
    main()
