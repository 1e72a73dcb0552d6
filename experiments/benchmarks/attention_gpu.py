"""Attention on one GPU: correctness and speed of the xla, cudnn and pallas implementations, and 124M train steps.

Four sections, each printed and written to --out (attention_gpu.json, attention_gpu.md) as soon
as it ends, so a run cut short still leaves what it measured. A case that raises is recorded as
an error row with the exception text; nothing stops the run.
  1. correctness: `dot_product_attention` with impl=pallas and cudnn (and xla itself) against an
     oracle, the xla reference on float32 copies of the same inputs at matmul precision "highest":
     max |error| of the output and of dq, dk, dv (jax.vjp with a random cotangent). B=2, N=4, H=64,
     causal, T in {128, 384, 200} (200 is padded by the kernels' 128-row tiles; 384 is not),
     float32 and bfloat16, plus segment-id cases for pallas and cudnn. Tolerances: bfloat16 6e-2;
     float32 2e-2 on GPU (TF32 matmuls are allowed), 1e-4 on CPU. cuDNN's fused attention takes
     fp16/bf16 only, so its float32 rows are expected errors.
  2. kernels: causal bf16 attention alone, H=64, N=12, T in {1024, 2048, 4096} with B*T = 16384:
     jit(forward) and jit(grad of sum(out * do) wrt q, k, v); median of 15 samples of 5 back-to-back
     calls after 3 warmup calls. FLOPs: forward = 4*B*N*T*T*H/2 (QK^T and PV, 2 FLOPs per
     multiply-add, half the square under the causal mask); forward+backward = 3.5 x forward (the
     backward's 5 matmuls vs the forward's 2). Ratios compare TFLOP/s (> 1: pallas is faster).
  3. train: the `gpt2` preset (124M), model.dtype=bfloat16, batch 8 x 1024, through the library's
     Trainer (the jitted, sharded step `gpt2-jax train` runs; embd/resid dropout 0.1 as in the
     preset), attn_pdrop=0 for every impl (cuDNN has no dropout) plus pallas with attn_pdrop=0.1
     (dropout inside the kernel). 3 warmup steps, then 10 timed; tokens/s and MFU (gpt2_jax/mfu.py:
     6N + 12LTD FLOPs per token over the device's peak dense bf16, 989 TFLOP/s for an H100).
  4. blocks: the pallas kernels alone at the first kernel shape (T=1024) for a few tile sizes and
     warp/stage counts (BLOCK_CANDIDATES), to choose `BlockSizes` defaults from measurements.

Run on the device, from the repository root (one H100, about 5 minutes; the first compile of
each kernel dominates):

    python experiments/benchmarks/attention_gpu.py --out $OUT

Compiled programs go to the persistent compilation cache (gpt2_jax/compilation_cache.py), so a
second run skips compiling. `--smoke` runs everything at tiny sizes (T=64/100/128, N=2, the `tiny` preset, 2 timed iterations)
for a CPU check: cudnn rows read "skipped: needs GPU", pallas runs interpreted (slowly), and the
timings mean nothing. `--sections kernels,train` runs a subset.

Hardware: one NVIDIA H100 80GB (SXM, HBM3); any CUDA GPU runs it, the MFU peak table knows
H100/H200/A100. Expected output: correctness all "pass" for pallas and for cudnn's bf16 rows;
cudnn forward near the published point below; pallas within a small factor of cudnn.

References (published H100 points, head dim 64, causal):
  NVIDIA cuDNN blog / cuDNN 9 release material: ~288 TFLOP/s causal forward at T=1k.
  Dao 2023, "FlashAttention-2", figure 7 (H100 SXM5): ~192 TFLOP/s forward+backward.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # gpt2_jax importable without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gpt2_jax.attention import dot_product_attention  # noqa: E402
from gpt2_jax.kernels import BlockSizes, flash_attention  # noqa: E402

IMPLS = ("xla", "cudnn", "pallas")
FULL = dict(c_T=(128, 384, 200), c_N=4, k_T=(1024, 2048, 4096), k_N=12, k_tokens=16384,
            warmup=3, iters=15, inner=5, preset="gpt2", batch=8, seq=1024, train_warmup=3, train_steps=10)
SMOKE = dict(c_T=(64, 100), c_N=2, k_T=(64, 128), k_N=2, k_tokens=256,
             warmup=1, iters=2, inner=1, preset="tiny", batch=2, seq=64, train_warmup=1, train_steps=2)


def skip_reason(impl: str) -> str | None:
    return "skipped: needs GPU" if impl == "cudnn" and jax.default_backend() != "gpu" else None


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:4000]


def short(text) -> str:
    return "" if text is None or text == "" else str(text).splitlines()[0][:160].replace("|", "/")


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """Markdown table; cols = (header, key, format spec; "s" = as text)."""
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [short(r.get(k)) if f == "s" else fmt(r.get(k), f) for _, k, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def randn(key, shape, dtype):
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


# ---------------------------------------------------------------------------------------------- 1
def correctness(s: dict) -> tuple[list[dict], str]:
    B, N, H, gpu = 2, s["c_N"], 64, jax.default_backend() == "gpu"
    tols = {"float32": 2e-2 if gpu else 1e-4, "bfloat16": 6e-2}
    cases = [(T, dt, False) for T in s["c_T"] for dt in tols] + [(s["c_T"][-1], dt, True) for dt in tols]

    def fwd_bwd(impl, q, k, v, do, seg):
        out, vjp = jax.vjp(lambda q, k, v: dot_product_attention(q, k, v, causal=True, segment_ids=seg, impl=impl),
                           q, k, v)
        return (out, *vjp(do))

    rows = []
    for T, dtype, segmented in cases:
        keys = jax.random.split(jax.random.key(T), 4)
        q, k, v, do = (randn(key, (B, T, N, H), dtype) for key in keys)
        # two documents per row, boundaries differ between rows
        seg = jnp.asarray(np.arange(T)[None, :] >= np.array([[T // 3], [T // 2]]), jnp.int32) if segmented else None
        with jax.default_matmul_precision("highest"):
            want = jax.jit(functools.partial(fwd_bwd, "xla"))(*(x.astype(jnp.float32) for x in (q, k, v, do)), seg)
        for impl in IMPLS:
            if segmented and impl == "xla":
                continue
            row = dict(impl=impl, T=T, dtype=dtype, segments=segmented, tol=tols[dtype], status="ERROR")
            t0 = time.perf_counter()
            if skip_reason(impl):
                row.update(status="SKIP", error=skip_reason(impl))
            else:
                try:
                    got = jax.jit(functools.partial(fwd_bwd, impl))(q, k, v, do, seg)
                    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
                        row[name] = float(jnp.max(jnp.abs(g.astype(jnp.float32) - w)))
                    ok = all(row[n] < row["tol"] for n in ("out", "dq", "dk", "dv"))  # NaN fails too
                    row["status"] = "pass" if ok else "FAIL"
                except Exception as e:  # noqa: BLE001 -- recorded, the run goes on
                    row["error"] = error_text(e)
            print(f"  correctness {impl:6s} T={T:4d} {dtype:8s} seg={segmented!s:5s} {row['status']:5s} "
                  f"({time.perf_counter() - t0:.1f}s) {short(row.get('error'))}", flush=True)
            rows.append(row)
    cols = [("impl", "impl", "s"), ("T", "T", "d"), ("dtype", "dtype", "s"), ("segments", "segments", "s"),
            ("max abs err out", "out", ".2e"), ("dq", "dq", ".2e"), ("dk", "dk", ".2e"), ("dv", "dv", ".2e"),
            ("tol", "tol", ".0e"), ("status", "status", "s"), ("error", "error", "s")]
    counts = ", ".join(f"{sum(r['status'] == k for r in rows)} {k}" for k in ("pass", "FAIL", "ERROR", "SKIP"))
    head = f"B={B} N={N} H=64 causal; oracle: xla reference in float32 at precision 'highest'; {counts}"
    return rows, f"{head}\n\n{table(rows, cols)}"


# ---------------------------------------------------------------------------------------------- 2
def bench(fn, args, s: dict) -> tuple[float, float]:
    """(median seconds per call, first-call seconds including compile)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    for _ in range(s["warmup"]):
        jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(s["iters"]):
        t0 = time.perf_counter()
        for _ in range(s["inner"]):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / s["inner"])
    return statistics.median(samples), first


def timed_passes(attn, q, k, v, do) -> dict:
    """{"fwd": ..., "fb": ...}: (jitted function, its arguments, FLOPs as a multiple of the
    forward's) for the forward pass and for forward+backward (d loss / d out = do)."""

    def loss(q, k, v, do):
        return jnp.sum(attn(q, k, v).astype(jnp.float32) * do.astype(jnp.float32))

    return {"fwd": (jax.jit(attn), (q, k, v), 1.0),
            "fb": (jax.jit(jax.grad(loss, argnums=(0, 1, 2))), (q, k, v, do), 3.5)}


def kernels(s: dict) -> tuple[dict, str]:
    N, H, rows = s["k_N"], 64, []
    for T in s["k_T"]:
        B = s["k_tokens"] // T
        q, k, v, do = (randn(key, (B, T, N, H), jnp.bfloat16) for key in jax.random.split(jax.random.key(T), 4))
        fwd_flops = 4.0 * B * N * T * T * H / 2
        for impl in IMPLS:
            passes = timed_passes(functools.partial(dot_product_attention, causal=True, impl=impl), q, k, v, do)
            row = dict(impl=impl, T=T, B=B)
            for name, (fn, args, factor) in passes.items():
                if skip_reason(impl):
                    row["error"] = skip_reason(impl)
                    continue
                try:
                    sec, first = bench(fn, args, s)
                    row.update({f"{name}_ms": 1e3 * sec, f"{name}_tflops": factor * fwd_flops / sec / 1e12,
                                f"{name}_first_s": first})
                except Exception as e:  # noqa: BLE001
                    row["error"] = "; ".join(filter(None, (row.get("error"), f"[{name}] {error_text(e)}")))[:4000]
            print(f"  kernels {impl:6s} T={T:5d} B={B:3d} fwd {fmt(row.get('fwd_tflops'), '.4g')} "
                  f"fwd+bwd {fmt(row.get('fb_tflops'), '.4g')} TFLOP/s {short(row.get('error'))}", flush=True)
            rows.append(row)
    ratios = []
    for T in s["k_T"]:
        by = {r["impl"]: r for r in rows if r["T"] == T}
        ratio = dict(T=T)
        for base in ("cudnn", "xla"):
            for key in ("fwd", "fb"):
                mine, theirs = by.get("pallas", {}).get(f"{key}_tflops"), by.get(base, {}).get(f"{key}_tflops")
                ratio[f"pallas_{base}_{key}"] = mine / theirs if mine and theirs else None
        ratios.append(ratio)
    cols = [("impl", "impl", "s"), ("T", "T", "d"), ("B", "B", "d"), ("fwd ms", "fwd_ms", ".3f"),
            ("fwd TFLOP/s", "fwd_tflops", ".4g"), ("fwd+bwd ms", "fb_ms", ".3f"),
            ("fwd+bwd TFLOP/s", "fb_tflops", ".4g"), ("fwd+bwd first call s", "fb_first_s", ".1f"),
            ("error", "error", "s")]
    rcols = [("T", "T", "d"), ("pallas/cudnn fwd", "pallas_cudnn_fwd", ".2f"),
             ("pallas/cudnn fwd+bwd", "pallas_cudnn_fb", ".2f"), ("pallas/xla fwd", "pallas_xla_fwd", ".2f"),
             ("pallas/xla fwd+bwd", "pallas_xla_fb", ".2f")]
    head = (f"causal bf16, H={H}, N={N}, B*T={s['k_tokens']}; forward FLOPs = 4*B*N*T*T*H/2, "
            f"fwd+bwd = 3.5 x forward; median of {s['iters']} samples x {s['inner']} calls after {s['warmup']} warmup")
    text = f"{head}\n\n{table(rows, cols)}\n\nratios of TFLOP/s (> 1: pallas faster)\n\n{table(ratios, rcols)}"
    return dict(rows=rows, ratios=ratios), text


# ---------------------------------------------------------------------------------------------- 3
def train(s: dict) -> tuple[list[dict], str]:
    from gpt2_jax import mfu
    from gpt2_jax.config import TrainConfig, apply_overrides
    from gpt2_jax.train import Trainer

    B, T, kind, rows = s["batch"], s["seq"], jax.devices()[0].device_kind, []
    for impl, pdrop in [*((i, 0.0) for i in IMPLS), ("pallas", 0.1)]:
        row = dict(impl=impl, attn_pdrop=pdrop, preset=s["preset"], B=B, T=T)
        if skip_reason(impl):
            row["error"] = skip_reason(impl)
        else:
            try:
                cfg = apply_overrides(TrainConfig(), [f"model={s['preset']}", "model.dtype=bfloat16",
                                                      f"model.attention={impl}", f"model.attn_pdrop={pdrop}",
                                                      f"batch_size={B}", f"data.seq_len={T}", "steps=1000"])
                trainer = Trainer.build(cfg)
                state = trainer.init_state()
                ids = np.random.RandomState(0).randint(0, cfg.model.n_vocab, size=(B, T + 1)).astype(np.int32)
                batch = jax.device_put(ids, trainer.batch_sharding)
                t0 = time.perf_counter()
                state, m = trainer.train_step(state, batch)
                row["loss_first"] = float(m["loss"])
                row["first_s"] = time.perf_counter() - t0
                for _ in range(s["train_warmup"]):
                    state, m = trainer.train_step(state, batch)
                jax.block_until_ready(state)
                t0 = time.perf_counter()
                for _ in range(s["train_steps"]):
                    state, m = trainer.train_step(state, batch)
                jax.block_until_ready((state, m))
                sec = (time.perf_counter() - t0) / s["train_steps"]
                row.update(ms=1e3 * sec, tokens_per_s=B * T / sec, loss_last=float(m["loss"]),
                           mfu=mfu.mfu(B * T / sec, cfg.model, cfg.seq_len, kind, 1))
                del state, trainer, batch
            except Exception as e:  # noqa: BLE001
                row["error"] = error_text(e)
        print(f"  train {impl:6s} attn_pdrop={pdrop} tokens/s {fmt(row.get('tokens_per_s'), ',.0f')} "
              f"{short(row.get('error'))}", flush=True)
        rows.append(row)
    cols = [("impl", "impl", "s"), ("attn_pdrop", "attn_pdrop", ".1f"), ("tokens/s", "tokens_per_s", ",.0f"),
            ("ms/step", "ms", ".1f"), ("MFU", "mfu", ".1%"), ("first step s", "first_s", ".1f"),
            ("loss first", "loss_first", ".4f"), ("loss last", "loss_last", ".4f"), ("error", "error", "s")]
    head = (f"preset {s['preset']}, model.dtype=bfloat16, batch {B} x {T}, same batch every step, "
            f"{s['train_warmup']} warmup + {s['train_steps']} timed steps; MFU from gpt2_jax/mfu.py ({kind})")
    return rows, f"{head}\n\n{table(rows, cols)}"


# ---------------------------------------------------------------------------------------------- 4
BLOCK_CANDIDATES = {  # (fwd q, fwd k, dkv q, dkv k, dq q, dq k, warps, stages)
    "default": dataclasses.astuple(BlockSizes()),
    "fwd 128x128, 8 warps": (128, 128, 32, 128, 128, 32, 8, 2),
    "fwd 64x64, 3 stages": (64, 64, 32, 128, 128, 32, 4, 3),
    "bwd 64x64": (128, 64, 64, 64, 64, 64, 4, 2),
    "bwd 64x128, 8 warps": (128, 64, 64, 128, 128, 64, 8, 2),
}


def blocks(s: dict) -> tuple[list[dict], str]:
    """Pallas fwd+bwd at the first kernel shape for a few tile choices, to pick the defaults."""
    T, N, H = s["k_T"][0], s["k_N"], 64
    B = s["k_tokens"] // T
    q, k, v, do = (randn(key, (B, T, N, H), jnp.bfloat16) for key in jax.random.split(jax.random.key(T), 4))
    fwd_flops = 4.0 * B * N * T * T * H / 2
    rows = []
    for name, sizes in BLOCK_CANDIDATES.items():
        attn = functools.partial(flash_attention, causal=True, block_sizes=BlockSizes(*sizes))
        row = dict(blocks=name, sizes=str(sizes))
        for key, (fn, args, factor) in timed_passes(attn, q, k, v, do).items():
            try:
                sec, _ = bench(fn, args, s)
                row[f"{key}_tflops"] = factor * fwd_flops / sec / 1e12
            except Exception as e:  # noqa: BLE001
                row["error"] = f"[{key}] {error_text(e)}"[:2000]
        print(f"  blocks {name:24s} fwd {fmt(row.get('fwd_tflops'), '.4g')} fwd+bwd "
              f"{fmt(row.get('fb_tflops'), '.4g')} TFLOP/s {short(row.get('error'))}", flush=True)
        rows.append(row)
    cols = [("blocks", "blocks", "s"), ("sizes", "sizes", "s"), ("fwd TFLOP/s", "fwd_tflops", ".4g"),
            ("fwd+bwd TFLOP/s", "fb_tflops", ".4g"), ("error", "error", "s")]
    head = (f"pallas only, causal bf16, T={T}, B={B}, N={N}, H={H}; sizes = (fwd q, fwd k, dkv q, dkv k, "
            f"dq q, dq k, num_warps, num_stages)")
    return rows, f"{head}\n\n{table(rows, cols)}"


# ---------------------------------------------------------------------------------------------- 5
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "attention_results", help="results folder ($OUT if set)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and 2 iterations, for a CPU check")
    ap.add_argument("--sections", default="correctness,kernels,train,blocks")
    ap.add_argument("--batch", type=int, help="train-step batch (default 8; smoke 2)")
    ap.add_argument("--seq", type=int, help="train-step sequence length (default 1024; smoke 64)")
    ap.add_argument("--train-steps", type=int, help="timed train steps (default 10; smoke 2)")
    ap.add_argument("--iters", type=int, help="timed kernel samples (default 15; smoke 2)")
    args = ap.parse_args()
    from gpt2_jax import compilation_cache

    # $GPT2_JAX_CACHE_DIR (gpu_session.sh shares one with gpu_speed.py) or the user cache; every entry kept
    compilation_cache.enable(min_compile_seconds=0)
    s = dict(SMOKE if args.smoke else FULL)
    overrides = dict(batch=args.batch, seq=args.seq, train_steps=args.train_steps, iters=args.iters)
    s.update({key: value for key, value in overrides.items() if value is not None})
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = jax.devices()[0]
    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), jax=jax.__version__,
                python=platform.python_version(), backend=jax.default_backend(), device_kind=dev.device_kind,
                devices=jax.device_count(), smoke=args.smoke, settings=s, argv=sys.argv)
    smoke = "  (SMOKE: tiny shapes, timings meaningless)" if args.smoke else ""
    header = (f"# attention_gpu {meta['date']}{smoke}\n\n"
              f"jax {meta['jax']} on {meta['backend']} ({dev.device_kind}, {meta['devices']} device), "
              f"Python {meta['python']}\n"
              f"command: {' '.join(sys.argv)}")
    print(header, flush=True)
    results, md = dict(meta=meta), [header]
    for name, fn in (("correctness", correctness), ("kernels", kernels), ("train", train), ("blocks", blocks)):
        if name not in args.sections.split(","):
            continue
        print(f"\n## {name}", flush=True)
        t0 = time.perf_counter()
        try:
            results[name], text = fn(s)
        except Exception as e:  # noqa: BLE001 -- a section that breaks outright still leaves a record
            results[name], text = [dict(error=error_text(e))], f"section failed: {short(error_text(e))}"
        text += f"\n\n({name}: {time.perf_counter() - t0:.0f} s)"
        print(f"\n{text}", flush=True)
        md.append(f"## {name}\n\n{text}")
        (out / "attention_gpu.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "attention_gpu.md").write_text("\n\n".join(md) + "\n")
    print(f"\nwrote {out / 'attention_gpu.json'} and {out / 'attention_gpu.md'}")


if __name__ == "__main__":
    main()
