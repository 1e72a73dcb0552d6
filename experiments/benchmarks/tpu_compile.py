"""Plan TPU pod runs without a TPU: compile the four GPT-2 sizes for several TPU slices.

Each row runs `gpt2-jax train model=M data.vocab=gpt2 model.dtype=bfloat16 batch_size=B
--compile-only --topology T --json` in a fresh process (libtpu compiles for the slice on this
CPU host) and tabulates per-device peak memory against the chip's HBM, whether it fits, the
compile time, the collectives and the roofline bound (gpt2_jax/compile_report.py). A row that
does not fit is retried with model.remat=dots, then full, and both rows are shown.
Batches are what a user would start from: sequences per chip 8 (gpt2, gpt2-medium) or 4
(gpt2-large, gpt2-xl), the whole slice as one fsdp axis, bf16 compute, defaults otherwise.

  python experiments/benchmarks/tpu_compile.py            # the table (minutes per row on 2 cores)
  python experiments/benchmarks/tpu_compile.py --smoke    # one tiny row, to check the script

References: gpt2_jax/compile_report.py; MaxText's train_compile.py (the same idea).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from gpt2_jax.chips import chip

SIZES = {"gpt2": 8, "gpt2-medium": 8, "gpt2-large": 4, "gpt2-xl": 4}  # preset -> sequences per chip
SLICES = [("v5e-16", 16, 1), ("v5e-256", 256, 1), ("v5p-128", 64, 1), ("v6e-64", 64, 1)]
# gpt2-xl's width 1600 does not divide over 256 fsdp shards: 64-way fsdp x 4-way data per slice.
MESH = {("gpt2-xl", 256): ["mesh.data=4", "mesh.fsdp=64"]}
TWO_SLICE = [("v5e-256", 256, 2)]


def run_row(model: str, per_chip: int, topo: str, chips: int, slices: int, extra: list[str]) -> dict:
    batch = per_chip * chips * slices
    cmd = [sys.executable, "-m", "gpt2_jax", "train", f"model={model}", "data.vocab=gpt2", f"batch_size={batch}",
           "model.dtype=bfloat16", *extra, "--compile-only", "--topology", topo, "--slices", str(slices), "--json"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    row = {"model": model, "topology": topo, "slices": slices, "batch": batch, "per_chip": per_chip,
           "extra": " ".join(extra), "wall_s": wall, "rc": done.returncode}
    if done.stdout.strip():
        row["report"] = json.loads(done.stdout.strip().splitlines()[-1])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    row["error"] = errors[-1] if errors else (None if done.returncode == 0 else done.stderr.strip()[-300:])
    return row


def fmt(row: dict) -> str:
    r = row.get("report")
    name = f"{row['model']} {row['extra']}".strip()
    where = row["topology"] + (f" x{row['slices']}" if row["slices"] > 1 else "")
    if r is None:
        return f"| {name} | {where} | {row['batch']} ({row['per_chip']}/chip) | - | no ({row['error']}) | - | - | - | - |"
    mesh = "x".join(str(v) for v in r["mesh"].values())
    gib = r["peak_bytes"] / 2**30
    hbm = chip(r["device_kind"]).hbm_bytes  # today's table (rows keep the HBM they were compiled against)
    fits = "yes" if r["peak_bytes"] <= hbm else "NO"
    roof = r["roofline"] or {}
    short = {"all-gather": "AG", "reduce-scatter": "RS", "all-reduce": "AR", "all-to-all": "A2A", "collective-permute": "CP"}
    coll = " ".join(f"{short[k]} {v}" for k, v in r["collectives"].items() if v)
    terms = {"compute": roof.get("compute_s", 0), "ICI": roof.get("ici_s", 0), "DCN": roof.get("dcn_s", 0)}
    if roof.get("hbm_s") and not r["decisions"]["scan_layers"]:
        terms["HBM"] = roof["hbm_s"]
    bound = max(terms, key=terms.get)
    mfu = (f"{1e3 * terms['compute']:.0f} / {1e3 * terms['ICI']:.0f} / {1e3 * terms['DCN']:.0f} ms: "
           f"<= {100 * roof['compute_s'] / terms[bound]:.0f}% ({bound})") if roof else "-"
    return (f"| {name} | {where} | {row['batch']} ({row['per_chip']}/chip) | {mesh} | {fits}: {gib:.2f} of "
            f"{hbm / 2**30:.1f} GiB | {r['compile_seconds']:.0f} | {coll} | {r['kernel_custom_calls']} | {mfu} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny row")
    parser.add_argument("--only", default=None, help="comma-separated presets")
    parser.add_argument("--out", default=None, help="also write the rows as JSON lines here (rows in it are not redone)")
    parser.add_argument("--table", action="store_true", help="only print the table of the rows in --out")
    args = parser.parse_args()
    if args.smoke:
        plan = [("tiny", 2, "v5e:2x2", 4, 1, []), ("tiny", 2, "v5e:2x2", 4, 2, [])]
    else:
        models = args.only.split(",") if args.only else list(SIZES)
        # Most informative first (the largest and smallest model on the largest slices), so a
        # partial run still answers the main questions; rows already in --out are not redone.
        order = ["gpt2-xl", "gpt2", "gpt2-large", "gpt2-medium"]
        plan = [(m, SIZES[m], t, c, s, MESH.get((m, c), [])) for m in order if m in models
                for t, c, s in [SLICES[1], *TWO_SLICE, SLICES[0], SLICES[2], SLICES[3]]
                if s == 1 or m in ("gpt2", "gpt2-xl")]
    print(f"# TPU compile plan, {datetime.date.today()}, host {platform.node()} ({os.cpu_count()} cores), "
          f"load {os.getloadavg()[0]:.1f}, python {platform.python_version()}")
    print("| model | slice | batch | mesh d x f x t | fits (peak per device) | compile s | collectives (in HLO) | kernels | roofline compute / ICI / DCN: MFU bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    done = {}
    if args.out and os.path.exists(args.out):
        for line in open(args.out):
            row = json.loads(line)
            done[(row["model"], row["topology"], row["slices"], row["extra"])] = row
    if args.table:
        for row in done.values():
            print(fmt(row))
        return
    out = open(args.out, "a") if args.out else None
    for model, per_chip, topo, chips, slices, extra in plan:
        if (model, topo, slices, " ".join(extra)) in done:
            print(fmt(done[(model, topo, slices, " ".join(extra))]), flush=True)
            continue
        row = run_row(model, per_chip, topo, chips, slices, extra)
        print(fmt(row), flush=True)
        rows = [row]
        for remat in ("dots", "full"):  # the cheaper recompute first
            last = rows[-1]
            if not ((last.get("report") and last["report"]["fits"] is False) or "GiB per device" in (last["error"] or "")):
                break
            if f"model.remat={remat}" in extra or (remat == "dots" and model == "gpt2-xl"):  # xl's default is dots
                continue
            rows.append(run_row(model, per_chip, topo, chips, slices, [*extra, f"model.remat={remat}"]))
            print(fmt(rows[-1]), flush=True)
        if out:
            for r in rows:
                out.write(json.dumps(r) + "\n")
                out.flush()


if __name__ == "__main__":
    main()
