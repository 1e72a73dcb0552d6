"""Input pipeline throughput: host tokens/s of TokenLoader into numpy batches and into sharded
jax.Arrays, for T=1024, against a peer measured in the same run.

Rows, per data set:
- `direct (peer)`: `loader.batch(step)` in a Python loop, the pure (seed, step) -> windows
  function with no tf.data: the gather itself, a floor for the pipeline's overhead.
- `tf.data numpy`: `loader.host_batches(0)`, what a host's training loop iterates.
- `tf.data jax.Array`: `loader.global_batches(0, sharding)` with the batch sharded over every
  local device (8 forced CPU devices here), each batch blocked until ready.
- `... 1 of 2 hosts`: the same loader as process 1 of 2 (half the rows of each global batch).
Tokens counted = rows x T per batch (the training tokens; each window reads T+1). GPT-2 124M
needs about 0.6M tokens/s per H100 at 50% MFU; the goal is >= 5M tokens/s per host.

Data sets: `real` = tiny Shakespeare plus the OpenWebText sample from ../shared/data, prepared
with the WebText recipe (about 0.5M tokens, several shards); `synthetic` = 100M random GPT-2 ids in
8 shards (200 MB), so reads are spread over more memory than any cache holds.

    .venv/bin/python experiments/benchmarks/data_loader.py [--seconds 3] [--batch 64] [--seq 1024]
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np
from machine import cpu_model  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def real_shards(root: pathlib.Path) -> pathlib.Path:
    from gpt2_jax.data.clean import Recipe
    from gpt2_jax.data.prepare import prepare

    out = root / "real"
    inputs = [SHARED / "openwebtext_sample" / "four_docs", SHARED / "openwebtext_sample" / "first100_docs.txt",
              SHARED / "tinyshakespeare" / "input.txt"]
    prepare(inputs, out, "gpt2", recipe=Recipe(split="tail", val_fraction=0.05), shard_bytes=200_000, workers=1)
    return out


def synthetic_shards(root: pathlib.Path, tokens: int = 100_000_000, n_shards: int = 8) -> pathlib.Path:
    from gpt2_jax.data.shards import MANIFEST, SHARD_FORMAT, write_shard

    out = root / "synthetic"
    out.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(n_shards):
        names.append(f"train_{i:06d}.bin")
        write_shard(out / names[-1], rng.integers(0, 50257, tokens // n_shards, dtype=np.uint16))
    write_shard(out / "val_000000.bin", rng.integers(0, 50257, 10_000, dtype=np.uint16))
    manifest = {"format": SHARD_FORMAT, "vocab": "gpt2", "vocab_fingerprint": None, "n_vocab": 50257, "eot_id": 50256,
                "splits": {"train": {"shards": names, "tokens": tokens // n_shards * n_shards},
                           "val": {"shards": ["val_000000.bin"], "tokens": 10_000}}}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def timed(batches, seconds: float, block=lambda b: b) -> tuple[float, int]:
    """Batches per second over about `seconds`, after 3 warm-up batches."""
    for _ in range(3):
        block(next(batches))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        block(next(batches))
        n += 1
    return n / (time.perf_counter() - start), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timing window per row")
    ap.add_argument("--batch", type=int, default=64, help="global batch (rows per host with 1 host)")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2, help="tf.data private thread pool")
    args = ap.parse_args()

    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from gpt2_jax.data.loader import TokenLoader

    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    print(f"# data loader throughput: {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{jax.device_count()} {jax.devices()[0].platform} devices, T={args.seq}, global batch {args.batch}, "
          f"tf.data threads {args.threads}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("real", real_shards), ("synthetic", synthetic_shards)):
            shard_dir = build(pathlib.Path(tmp))

            def loader(**kw):
                kw = {"process_index": 0, "process_count": 1} | kw
                return TokenLoader(shard_dir, "train", args.seq, args.batch, 0, 50257, threads=args.threads, **kw)

            one = loader()
            tokens = sum(s.size for s in one.shards)
            cases = [
                ("direct (peer)", args.batch, (one.batch(s) for s in range(10**9)), lambda b: b),
                ("tf.data numpy", args.batch, one.host_batches(0), lambda b: b),
                ("tf.data jax.Array", args.batch, one.global_batches(0, sharding), lambda b: b.block_until_ready()),
                ("tf.data numpy, 1 of 2 hosts", args.batch // 2,
                 loader(process_index=1, process_count=2).host_batches(0), lambda b: b),
            ]
            peer = None
            for label, host_rows, batches, block in cases:
                rate, n = timed(batches, args.seconds, block)
                tps = rate * host_rows * args.seq
                peer = peer or tps
                rows.append((name, f"{tokens / 1e6:.1f}M/{len(one.shards)}", label, host_rows, rate, tps, tps / peer, n))
    print("| data | tokens/shards | path | rows/host | batches/s | host tokens/s | vs peer | batches timed |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size, label, host_rows, rate, tps, ratio, n in rows:
        print(f"| {name} | {size} | {label} | {host_rows} | {rate:,.0f} | {tps / 1e6:,.1f}M | {ratio:.2f} | {n} |")


if __name__ == "__main__":
    main()
