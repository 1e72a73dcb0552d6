"""How long a checkpoint save blocks the training loop, against one train step, on this machine.

A GPT-2 124M train state (params + AdamW moments, ~1.5 GB float32) on one device, the real
jitted train step (state donated) and the real save path (`gpt2_jax.checkpoint.save`: Orbax
CheckpointManager, async, CRC-32 checksums written in the background before the commit).

First one untimed-for-the-table save: it allocates the host buffers a CPU save copies the state
into (page faults; reported on its own). Then each round, so that machine noise hits all alike:
  clean step      a train step with no save in flight (the peer the others are compared to)
  save() call     what the loop waits for when it starts an async save
  step after save the next train step, while Orbax writes in the background
  rest of write   what was still left of the background write after that step
  sync save       save + wait_until_finished together: what a synchronous save would block

With --peer, every round also runs the same sequence with the host-buffer copy turned off (Orbax
given the device arrays themselves, zero-copy on CPU): the peer that shows why the copy is there.

    .venv/bin/python experiments/benchmarks/checkpoint_async.py [--rounds 3] [--batch 2] [--seq 128] [--peer]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from machine import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dir", default=None, help="where checkpoints go (default: a temporary directory)")
    ap.add_argument("--peer", action="store_true", help="also measure without the host-buffer copy (zero-copy)")
    args = ap.parse_args()
    load_start = os.getloadavg()

    import jax
    import numpy as np

    from gpt2_jax import checkpoint
    from gpt2_jax.config import DataConfig, MeshConfig, TrainConfig, preset
    from gpt2_jax.model import count_params
    from gpt2_jax.train import Trainer

    cfg = TrainConfig(model=preset(args.preset), data=DataConfig(seq_len=args.seq), batch_size=args.batch,
                      mesh=MeshConfig(data=1, fsdp=1, tensor=1), steps=1000, workdir="unused")
    trainer = Trainer.build(cfg, jax.devices()[:1])
    state = trainer.init_state()
    rs = np.random.RandomState(0)
    batches = [jax.device_put(rs.randint(0, cfg.model.n_vocab, (args.batch, args.seq + 1)).astype(np.int32),
                              trainer.batch_sharding) for _ in range(4)]
    n_params = count_params(state.params, cfg.model)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))
    steps = [0]

    def step():
        nonlocal state
        t0 = time.perf_counter()
        state, metrics = trainer.train_step(state, batches[steps[0] % len(batches)])
        jax.block_until_ready((state, metrics))
        steps[0] += 1
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    step()  # warm-up

    root = args.dir or tempfile.mkdtemp(prefix="ckpt_bench_")
    mngr = checkpoint.manager(os.path.join(root, "checkpoints"), keep=1)
    t0 = time.perf_counter()
    checkpoint.save(mngr, steps[0], cfg, state.params, state.opt_state, {})
    first_call = time.perf_counter() - t0
    checkpoint.wait(mngr)
    modes = ["host copy (default)"] + (["zero-copy (peer)"] if args.peer else [])
    rows = {m: {k: [] for k in ("clean", "call", "after", "rest", "sync")} for m in modes}
    staging = checkpoint._Manager.stage
    for r in range(args.rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            checkpoint._Manager.stage = staging if mode == modes[0] else (lambda self, item, tree: tree)
            row = rows[mode]
            row["clean"].append(step())
            t0 = time.perf_counter()
            checkpoint.save(mngr, steps[0], cfg, state.params, state.opt_state, {})
            row["call"].append(time.perf_counter() - t0)
            row["after"].append(step())
            t0 = time.perf_counter()
            checkpoint.wait(mngr)
            row["rest"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            checkpoint.save(mngr, steps[0], cfg, state.params, state.opt_state, {})
            checkpoint.wait(mngr)
            row["sync"].append(time.perf_counter() - t0)
    checkpoint._Manager.stage = staging
    mngr.close()
    ckpt_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    if args.dir is None:
        shutil.rmtree(root)
    load_end = os.getloadavg()

    print(f"# checkpoint_async  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores; load average (1 min) {load_start[0]:.1f} at start, "
          f"{load_end[0]:.1f} at end")
    print(f"jax {jax.__version__} ({jax.default_backend()}, 1 device); model {args.preset}: {n_params:,} params; "
          f"state {state_bytes / 1e9:.2f} GB (params + AdamW moments, fp32); one checkpoint on disk "
          f"{ckpt_bytes / 1e9:.2f} GB; batch {args.batch} x {args.seq}; compile {compile_s:.1f} s; "
          f"first save() call {first_call:.2f} s (allocates the host buffers)")
    print(f"{args.rounds} rounds, median (per-round values in brackets)")
    print()
    print("| save path | what | seconds | vs clean step | per round |")
    print("|---|---|---:|---:|---|")
    labels = {"clean": "clean train step (peer)", "call": "async save: save() call (blocks the loop)",
              "after": "train step while the save is written", "rest": "rest of the background write after it",
              "sync": "synchronous save (save + wait)"}
    for mode in modes:
        med = {k: statistics.median(v) for k, v in rows[mode].items()}
        for key, label in labels.items():
            print(f"| {mode} | {label} | {med[key]:.3f} | {100 * med[key] / med['clean']:.1f}% | "
                  + ", ".join(f"{v:.3f}" for v in rows[mode][key]) + " |")


if __name__ == "__main__":
    main()
