"""Sweep packing: many tiny points side by side on disjoint sub-meshes vs one at a time.

Runs the same sweep of tiny points twice in one process on forced CPU devices (default 8):
"one at a time" gives every point all devices (the runner's default), "packed" gives each
point its own `--devices-per-point` devices (default 1) and runs as many side by side as fit
(scaling/runner.py). Both write their points from scratch into a temporary directory; data
(the bundled corpus with a 320-token BBPE) is prepared once beforehand and not timed. Prints a
table of wall times and the ratio one-at-a-time / packed (> 1: packing is faster), and checks
each point's final losses agree between the two (to float rounding; the meshes differ).

Command:   python experiments/benchmarks/scaling_packing.py [--points 16] [--steps 20] [--devices 8]
Hardware:  any CPU (the forced devices share its cores); results in RESULTS.md.

References:
  gpt2_jax/scaling/runner.py (packing), tests/test_scaling_sweep.py (packed == one at a time).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--devices-per-point", type=int, default=1)
    args = ap.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

    import jax

    from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
    from gpt2_jax.scaling.runner import prepare_data, run_sweep
    from gpt2_jax.scaling.sweep import Point, Sweep

    model = dataclasses.replace(preset("tiny"), n_vocab=320, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    base = TrainConfig(workdir="unused", model=model, data=DataConfig(seq_len=32, vocab="bbpe:320"),
                       optim=OptimConfig(lr=3e-3, warmup_steps=2), steps=args.steps, batch_size=8, log_every=5,
                       eval_every=10**6, eval_batches=2, ckpt_every=0, keep_checkpoints=1, sample_prompt="")
    widths = (16, 32, 48, 64)
    points = tuple(Point(f"p{i:02d}-d{widths[i % 4]}", dataclasses.replace(model, n_layer=1 + i % 2, n_embd=widths[i % 4],
                                                                          n_head=widths[i % 4] // 16), args.steps)
                   for i in range(args.points))
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        sweep = prepare_data(Sweep(base, points), pathlib.Path(tmp) / "data", quiet)
        times, results = {}, {}
        for mode, k in (("one at a time", 0), ("packed", args.devices_per_point)):
            t0 = time.perf_counter()
            results[mode] = run_sweep(sweep, pathlib.Path(tmp) / mode.replace(" ", "_"), devices_per_point=k,
                                      progress=False, say=quiet)
            times[mode] = time.perf_counter() - t0
    worst = max(abs(a["eval_loss"] - b["eval_loss"]) / a["eval_loss"]
                for a, b in zip(results["one at a time"], results["packed"]))
    ratio = times["one at a time"] / times["packed"]
    print(f"{args.points} points x {args.steps} steps (1-2 layers, d 16-64, batch 8 x 32), "
          f"{jax.device_count()} {jax.devices()[0].platform} devices, {os.cpu_count()} cores")
    print("| mode | devices per point | side by side | wall s |")
    print("|---|---:|---:|---:|")
    print(f"| one at a time | {args.devices} | 1 | {times['one at a time']:.1f} |")
    print(f"| packed | {args.devices_per_point} | {args.devices // args.devices_per_point} | {times['packed']:.1f} |")
    print(f"ratio one-at-a-time / packed: {ratio:.2f}x; largest relative eval-loss difference {worst:.2e}")


if __name__ == "__main__":
    main()
