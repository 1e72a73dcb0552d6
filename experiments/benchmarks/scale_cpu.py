"""Training tokens/s of one small model on 1 CPU device vs 8 forced CPU devices (dp and fsdp),
and per-device memory of gpt2-xl under fsdp on 8 devices with and without remat (compile only).

Command: .venv/bin/python experiments/benchmarks/scale_cpu.py [--steps 6]
Each configuration runs in its own process (the device count is fixed when JAX starts); the
rows are measured in the same run, so compare them as ratios. On a 2-core machine 8 "devices"
share 2 cores: this measures the overhead of the sharded program, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import dataclasses, json, sys, time
    import jax, numpy as np
    from gpt2_jax.config import TrainConfig, apply_overrides
    from gpt2_jax.train import Trainer
    overrides, steps = json.loads(sys.argv[1]), int(sys.argv[2])
    cfg = apply_overrides(TrainConfig(), overrides)
    trainer = Trainer.build(cfg)
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    batches = [jax.device_put(rng.integers(0, cfg.model.n_vocab, (cfg.batch_size, cfg.seq_len + 1)).astype(np.int32),
                              trainer.batch_sharding) for _ in range(steps + 1)]
    state, m = trainer.train_step(state, batches[0]); jax.block_until_ready(m)  # compile
    t = time.perf_counter()
    for b in batches[1:]:
        state, m = trainer.train_step(state, b)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / steps
    print(json.dumps({"tokens_per_sec": cfg.batch_size * cfg.seq_len / dt, "ms_per_step": 1000 * dt}))
""")

SMALL = ["model=mini", "model.n_layer=6", "model.n_embd=384", "model.n_head=6", "model.n_ctx=256",
         "batch_size=8", "data.seq_len=256", "model.embd_pdrop=0", "model.attn_pdrop=0", "model.resid_pdrop=0"]


def run(devices: int, overrides: list[str], steps: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(overrides), str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compile_only(devices: int, overrides: list[str]) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "gpt2_jax", "train", *overrides, "--compile-only", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    print("## training step, L6 D384 H6 T256 batch 8, GPT-2 vocab, fp32\n")
    print("| devices | mesh | tokens/s | ms/step | vs 1 device |")
    print("|---|---|---|---|---|")
    base = None
    for devices, mesh in [(1, ["mesh.fsdp=1"]), (8, ["mesh.rules=dp", "mesh.data=8", "mesh.fsdp=1"]),
                          (8, ["mesh.rules=fsdp", "mesh.fsdp=8"]), (1, ["mesh.fsdp=1"])]:
        r = run(devices, SMALL + mesh, args.steps)
        base = base or r["tokens_per_sec"]
        print(f"| {devices} | {' '.join(mesh)} | {r['tokens_per_sec']:,.0f} | {r['ms_per_step']:.0f} | "
              f"{r['tokens_per_sec'] / base:.2f} |")
    print("\n## gpt2-xl, fsdp over 8 devices, batch 8 x 1024, compile only\n")
    print("| remat | arguments GiB | temporaries GiB | peak GiB per device |")
    print("|---|---|---|---|")
    for remat in ("none", "dots", "full"):
        r = compile_only(8, ["model=gpt2-xl", "mesh.rules=fsdp", "batch_size=8", f"model.remat={remat}"])
        gib = 2**30
        print(f"| {remat} | {r['argument_bytes'] / gib:.2f} | {r['temp_bytes'] / gib:.2f} | {r['peak_bytes'] / gib:.2f} |")


if __name__ == "__main__":
    main()
