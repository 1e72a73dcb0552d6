"""Training speed on one GPU: gpt2_jax with its defaults and the alternatives, against a PyTorch peer.

Every row of issue 15's table, measured in one run so the ratios are fair: the `gpt2` preset at
batch 16 x 1024 and `gpt2-xl` at 8 x 1024, bf16 compute (`model.dtype=bfloat16`, float32 master
weights and moments), random tokens, one fixed batch, through the library's `Trainer` (the
jitted, sharded step `gpt2-jax train` runs); embedding and residual dropout 0.1, attention
dropout 0 except where a row says so. The peer is experiments/benchmarks/nanogpt_peer.py (the
same shapes and work in PyTorch: flash SDPA, fused AdamW, bf16 autocast), eager and
`torch.compile`. Then the attention kernels alone (attention_gpu.py's kernel table: causal bf16,
H=64, T=1024/2048/4096), plus the Pallas kernel with dropout 0.1.

Each training row runs in a fresh subprocess (clean GPU memory; a crash or OOM is one error
row), times `--steps` steps after `--warmup`, and reports tokens/s, MFU (gpt2_jax/mfu.py:
(6N + 12LTD) FLOPs per token over the device's peak dense bf16, 989 TFLOP/s for H100/H200) and
the ratio to the `torch.compile` peer of the same preset. Rows run in order of value (what the
defaults give and their peer first, alternatives after) while `--budget-s` lasts; the tables
(gpu_speed.md, gpu_speed.json under --out, $OUT if set) are rewritten after every row, so a run
cut short keeps what it measured. `--rows "a;b"` runs a subset (names in ROWS); `--quick` runs
QUICK_ROWS: the defaults vs the peer for `gpt2` and `gpt2-xl` and the kernel table, meant to end
within 5 minutes on one H100/H200.

The row processes share a persistent JAX compilation cache (`--cache-dir`, default
$GPT2_JAX_CACHE_DIR, else runs/xla_cache in the checkout; `none` turns it off) with every entry
kept (no minimum compile time or size), and with it XLA's GPU autotuning cache: a program or a
fusion compiled by one row, by an earlier run or by a `--quick` run before the full table is not
compiled again. Each row reports its first step ("first step s", compilation included) and
whether it found its program in the cache.

On the device machine (Python 3.12, jax 0.11, torch 2.11, no TensorFlow), from the checkout:

    PYTHONPATH=$PWD python experiments/benchmarks/gpu_speed.py --out $OUT --quick
    PYTHONPATH=$PWD python experiments/benchmarks/gpu_speed.py --out $OUT --budget-s 520

On this CPU, end to end at tiny shapes (cudnn rows are skipped, Pallas runs interpreted, the
numbers mean nothing): `PYTHONPATH=$PWD python experiments/benchmarks/gpu_speed.py --smoke`
(add `--quick` for the quick set's rows).

References:
  Issue 15 (the table re-measured here); karpathy/nanoGPT (the peer); Chowdhery et al. 2022,
  "PaLM", appendix B (the MFU formula).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
GPT2 = dict(preset="gpt2", batch=16)
XL = dict(preset="gpt2-xl", batch=8)
EXPLICIT_OLD = ["model.attention=xla", "model.scan_layers=true", "model.remat=none"]  # the defaults before issue 15

# (name, kind, settings), in the order they run. "ours" rows take key=value overrides on top of
# model=<preset> model.dtype=bfloat16 model.attn_pdrop=0; "env" adds environment variables.
ROWS: list[tuple[str, str, dict]] = [
    ("gpt2 defaults", "ours", dict(GPT2, overrides=[])),
    ("peer torch.compile", "peer", dict(GPT2, compile=True)),
    ("gpt2-xl defaults", "ours", dict(XL, overrides=[])),
    ("kernels", "kernels", {}),  # before the gpt2-xl peer: cheaper (its compile time is the least known)
    ("peer torch.compile gpt2-xl", "peer", dict(XL, compile=True)),
    ("gpt2-xl defaults, attn_pdrop 0.1", "ours", dict(XL, overrides=["model.attn_pdrop=0.1"])),
    ("gpt2 defaults, attn_pdrop 0.1", "ours", dict(GPT2, overrides=["model.attn_pdrop=0.1"])),
    ("gpt2-xl cudnn dots scanned", "ours", dict(XL, overrides=["model.attention=cudnn", "model.remat=dots",
                                                               "model.scan_layers=true"])),
    ("peer eager", "peer", dict(GPT2, compile=False)),
    ("gpt2 old defaults (xla, scanned)", "ours", dict(GPT2, overrides=EXPLICIT_OLD)),
    ("gpt2 cudnn unrolled", "ours", dict(GPT2, overrides=["model.attention=cudnn", "model.scan_layers=false"])),
    ("gpt2 pallas unrolled", "ours", dict(GPT2, overrides=["model.attention=pallas", "model.scan_layers=false"])),
    ("gpt2 cudnn scanned", "ours", dict(GPT2, overrides=["model.attention=cudnn", "model.scan_layers=true"])),
    ("gpt2 pallas scanned", "ours", dict(GPT2, overrides=["model.attention=pallas", "model.scan_layers=true"])),
    ("gpt2 defaults, bf16 Adam mu", "ours", dict(GPT2, overrides=["optim.mu_dtype=bfloat16"])),
    ("gpt2 defaults, chunked LM head loss", "ours", dict(GPT2, overrides=["loss_chunk_tokens=2048"])),
    ("gpt2 defaults, remat dots", "ours", dict(GPT2, overrides=["model.remat=dots"])),
    ("gpt2 defaults, XLA latency-hiding scheduler", "ours",
     dict(GPT2, overrides=[], env={"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true"})),
    ("gpt2 defaults, no Triton GEMM", "ours",
     dict(GPT2, overrides=[], env={"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=false"})),
    ("gpt2-xl cudnn unrolled, remat none", "ours", dict(XL, overrides=["model.attention=cudnn", "model.remat=none",
                                                                        "model.scan_layers=false"])),
]
# --quick: what the defaults give against the peer at both sizes, and the kernels (< 5 min on an H100/H200).
QUICK_ROWS = ("gpt2 defaults", "peer torch.compile", "gpt2-xl defaults", "kernels", "peer torch.compile gpt2-xl")
SMOKE = dict(preset="tiny", batch=2, seq=64, steps=2, warmup=1)
# --smoke runs one row of each kind (the code paths), not the whole table.
SMOKE_ROWS = ("gpt2 defaults", "peer torch.compile", "peer eager", "gpt2 pallas unrolled", "gpt2 cudnn unrolled",
              "gpt2 defaults, bf16 Adam mu", "kernels")


# ---------------------------------------------------------------------------------------------- one row
def run_ours(preset: str, batch: int, seq: int, overrides: list[str], steps: int, warmup: int) -> dict:
    """One training configuration through Trainer, in this process."""
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    from gpt2_jax import mfu, target
    from gpt2_jax.config import TrainConfig, apply_overrides
    from gpt2_jax.train import Trainer

    cfg = apply_overrides(TrainConfig(), [f"model={preset}", "model.dtype=bfloat16", "model.attn_pdrop=0",
                                          f"batch_size={batch}", f"data.seq_len={seq}", "steps=100000", *overrides])
    trainer = Trainer.build(cfg)
    state = trainer.init_state()
    ids = np.random.RandomState(0).randint(0, cfg.model.n_vocab, size=(batch, seq + 1)).astype(np.int32)
    data = jax.device_put(ids, trainer.batch_sharding)
    t0 = time.perf_counter()
    state, metrics = trainer.train_step(state, data)
    loss_first = float(metrics["loss"])
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        state, metrics = trainer.train_step(state, data)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.train_step(state, data)
    jax.block_until_ready((state, metrics))
    sec = (time.perf_counter() - t0) / steps
    kind = jax.devices()[0].device_kind
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
    return dict(ms=1e3 * sec, tokens_per_s=batch * seq / sec, mfu=mfu.mfu(batch * seq / sec, cfg.model, seq, kind, 1),
                first_s=first_s, loss_first=loss_first, loss_last=float(metrics["loss"]), device=kind,
                resolved=target.decide(cfg.model).describe(cfg.model), peak_gib=stats.get("peak_bytes_in_use", 0) / 2**30 or None)


def run_kernels(smoke: bool) -> dict:
    """attention_gpu.py's kernel table, plus Pallas with in-kernel dropout 0.1."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import functools

    import jax
    import jax.numpy as jnp

    import attention_gpu as ag
    from gpt2_jax.kernels import flash_attention

    s = dict(ag.SMOKE if smoke else ag.FULL)
    if not smoke:
        s.update(iters=8, inner=5, warmup=2)
    result, text = ag.kernels(s)
    drop_rows = []
    for T in s["k_T"]:
        B, N, H = s["k_tokens"] // T, s["k_N"], 64
        q, k, v, do = (ag.randn(key, (B, T, N, H), jnp.bfloat16) for key in jax.random.split(jax.random.key(T), 4))
        attn = functools.partial(flash_attention, causal=True, dropout_rate=0.1, dropout_seed=jnp.int32(1),
                                 interpret=jax.default_backend() == "cpu")
        row = dict(T=T, B=B)
        for name, (fn, args, factor) in ag.timed_passes(attn, q, k, v, do).items():
            try:
                sec, _ = ag.bench(fn, args, s)
                row[f"{name}_tflops"] = factor * 4.0 * B * N * T * T * H / 2 / sec / 1e12
            except Exception as e:  # noqa: BLE001 -- recorded
                row["error"] = ag.error_text(e)
        drop_rows.append(row)
    text += "\n\npallas with attention dropout 0.1 (in-kernel hash mask)\n\n" + ag.table(
        drop_rows, [("T", "T", "d"), ("B", "B", "d"), ("fwd TFLOP/s", "fwd_tflops", ".4g"),
                    ("fwd+bwd TFLOP/s", "fb_tflops", ".4g"), ("error", "error", "s")])
    return dict(kernels=result, dropout=drop_rows, text=text)


def child(spec: dict) -> None:
    """`--child JSON`: one row, printed as the last line (JSON)."""
    cache = None
    if spec["kind"] != "peer" and spec.get("cache_dir"):
        sys.path.insert(0, str(ROOT))
        from gpt2_jax import compilation_cache

        os.environ[compilation_cache.ENV_VAR] = spec["cache_dir"]
        compilation_cache.enable(min_compile_seconds=0)  # every entry persists: small kernels too
        cache = compilation_cache.track()
    if spec["kind"] == "ours":
        out = run_ours(spec["preset"], spec["batch"], spec["seq"], spec["overrides"], spec["steps"], spec["warmup"])
    elif spec["kind"] == "peer":
        sys.path.insert(0, str(HERE))
        import nanogpt_peer

        # On a CPU smoke run, torch.compile's C++ code generation alone takes minutes: compile through
        # dynamo + AOT autograd with the eager backend instead (the same capture, no codegen).
        backend = "aot_eager" if spec["smoke"] else "inductor"
        out = nanogpt_peer.run(spec["preset"], spec["batch"], spec["seq"], compile=spec["compile"], steps=spec["steps"],
                               warmup=spec["warmup"], embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.0,
                               compile_backend=backend)
    else:
        out = run_kernels(spec["smoke"])
    if cache is not None:
        out["cache"] = f"{cache['hits']}/{cache['requests']} hits, {cache['saved_s']:.0f} s saved"
    print("ROW-RESULT " + json.dumps(out, default=str), flush=True)


# ---------------------------------------------------------------------------------------------- the run
def needs_gpu(name: str, kind: str, settings: dict) -> bool:
    return kind == "ours" and any("attention=cudnn" in o for o in settings.get("overrides", []))


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(meta: dict, rows: list[dict]) -> str:
    peers = {r["size"]: r for r in rows if r["kind"] == "peer" and r.get("compile") and r.get("tokens_per_s")}
    lines = [f"# gpu_speed {meta['date']}{'  (SMOKE: tiny shapes on CPU, numbers meaningless)' if meta['smoke'] else ''}",
             "", f"{meta['device']}; jax {meta['jax']}, Python {meta['python']}; command: {meta['command']}; "
                 f"compilation cache: {meta.get('cache_dir')}",
             "bf16 compute, fp32 master weights; embd/resid dropout 0.1, attn dropout 0 unless the row says; "
             "MFU = (6N + 12LTD) tokens/s / peak dense bf16 (gpt2_jax/mfu.py); ratio = tokens/s / the same preset's peer torch.compile; "
             "first step = compilation + one step (cache: persistent compilation cache hits in that row)",
             "", "| row | batch | tokens/s | MFU | vs torch.compile | ms/step | first step s | cache | resolved settings | "
                 "peak GiB | loss first/last | error |", "|---|---|---:|---:|---:|---:|---:|---|---|---:|---|---|"]
    for r in rows:
        if r["kind"] == "kernels":
            continue
        peer = peers.get(r["size"])
        ratio = r["tokens_per_s"] / peer["tokens_per_s"] if peer and r.get("tokens_per_s") else None
        batch = f"{r['preset']} {r['batch']}x{r['seq']}"
        lines.append(f"| {r['name']} | {batch} | {fmt(r.get('tokens_per_s'), ',.0f')} | {fmt(r.get('mfu'), '.1%')} | "
                     f"{fmt(ratio, '.2f')} | {fmt(r.get('ms'), '.1f')} | {fmt(r.get('first_s'), '.0f')} | {r.get('cache', '')} | "
                     f"{r.get('resolved', r.get('impl', ''))} | {fmt(r.get('peak_gib'), '.1f')} | "
                     f"{fmt(r.get('loss_first'), '.3f')}/{fmt(r.get('loss_last'), '.3f')} | "
                     f"{str(r.get('error', ''))[:200].replace('|', '/')} |")
    for r in rows:
        if r["kind"] == "kernels":
            lines += ["", "## kernels", "", f"(compilation cache: {r.get('cache', 'off')}; row {fmt(r.get('wall_s'), '.0f')} s)",
                      "", r.get("text") or f"error: {r.get('error')}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_speed_results")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 steps, on any backend (a CPU check)")
    ap.add_argument("--rows", default="", help="semicolon-separated row names to run (default: all, in order)")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_ROWS)} (budget 280 s)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting rows after this many seconds (default 520; --quick 280)")
    ap.add_argument("--cache-dir", default=os.environ.get("GPT2_JAX_CACHE_DIR") or str(ROOT / "runs" / "xla_cache"),
                    help="persistent compilation cache shared by the rows ('none': off)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per training row")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))

    # The header needs the device; without this the parent would preallocate 75% of the GPU's memory
    # for the whole run and starve the rows' subprocesses (which keep JAX's default allocator).
    user_prealloc = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import jax

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), jax=jax.__version__,
                python=platform.python_version(), device=f"{jax.default_backend()} {jax.devices()[0].device_kind}",
                smoke=args.smoke, command=" ".join(sys.argv), cache_dir=args.cache_dir)
    del jax
    wanted = ([n.strip() for n in args.rows.split(";") if n.strip()] or (list(QUICK_ROWS) if args.quick else [])
              or (list(SMOKE_ROWS) if args.smoke else []))
    if args.budget_s is None:
        args.budget_s = 280 if args.quick else 520
    cache_dir = None if args.cache_dir.strip().lower() in ("none", "off", "0", "false", "no") else args.cache_dir
    if args.smoke:
        args.budget_s = max(args.budget_s, 3600)  # tiny rows; a busy CPU must not skip them
    unknown = set(wanted) - {name for name, _, _ in ROWS}
    if unknown:
        raise SystemExit(f"error: unknown rows {sorted(unknown)}; choose from {[name for name, _, _ in ROWS]}")
    on_gpu = meta["device"].startswith("gpu")
    start, rows = time.perf_counter(), []
    for name, kind, settings in ROWS:
        if wanted and name not in wanted:
            continue
        spec = dict(kind=kind, name=name, steps=args.steps, warmup=args.warmup, seq=args.seq, smoke=args.smoke,
                    compile=False, overrides=[], cache_dir=cache_dir)
        spec.update({k: v for k, v in settings.items() if k != "env"})
        spec["size"] = spec.get("preset")  # the row's model size, kept when --smoke shrinks it
        if args.smoke:
            spec.update(SMOKE, preset="tiny")
        row = dict(spec)
        left = args.budget_s - (time.perf_counter() - start)
        if needs_gpu(name, kind, settings) and not on_gpu:
            row["error"] = "skipped: cudnn needs a GPU"
        elif left < 30:
            row["error"] = f"skipped: time budget ({args.budget_s:.0f} s) spent"
        else:
            env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
            if user_prealloc is not None:
                env["XLA_PYTHON_CLIENT_PREALLOCATE"] = user_prealloc
            env = {**env, **settings.get("env", {}), "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, text=True,
                                      capture_output=True, timeout=max(30, left))
                result = [line for line in proc.stdout.splitlines() if line.startswith("ROW-RESULT ")]
                if proc.returncode == 0 and result:
                    row.update(json.loads(result[-1][len("ROW-RESULT "):]))
                else:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()
                    row["error"] = f"exit {proc.returncode}: " + " / ".join(tail[-3:])[-600:]
            except subprocess.TimeoutExpired:
                row["error"] = f"timed out after {max(30, left):.0f} s"
            row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{name:48s} tokens/s {fmt(row.get('tokens_per_s'), ',.0f'):>10s} MFU {fmt(row.get('mfu'), '.1%'):>6s} "
              f"({row.get('wall_s', 0):.0f} s) {str(row.get('error', ''))[:150]}", flush=True)
        text = report(meta, rows)
        (out / "gpu_speed.md").write_text(text)
        (out / "gpu_speed.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=str))
    print("\n" + report(meta, rows))
    print(f"wrote {out / 'gpu_speed.md'} and {out / 'gpu_speed.json'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
