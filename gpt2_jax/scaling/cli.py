"""The `gpt2-jax sweep run|collect` and `gpt2-jax scaling fit` commands.

`sweep run SWEEP.py --out DIR` trains the points of a sweep file (resumable; packed side by side
with --devices-per-point), `--dry-run` only lists them with N, D, FLOPs and an estimated time.
`sweep collect DIR --out results.csv` writes the results table. `scaling fit results.csv --law L`
fits a law, optionally with bootstrap intervals and plots; with --json the last stdout line is one
JSON object. Errors a user can cause are ScalingError: one `error:` line, exit status 2.

References:
  gpt2_jax/scaling/runner.py, collect.py, fit.py.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from gpt2_jax.cli_types import float_in, nonneg_int, positive_float
from gpt2_jax.scaling.errors import ScalingError

# Assumed sustained training throughput for --dry-run time estimates when none is given:
# a fraction of peak on known accelerators (mfu.PEAK_FLOPS); on CPUs a rate measured here
# (the shipped CPU study, experiments/benchmarks/RESULTS.md).
ASSUMED_MFU = 0.3
CPU_FLOPS_PER_SEC = 1e10  # the study's largest point ran at 1.4e10 FLOP/s on a shared 2-core CPU


def user_errors() -> tuple[type[Exception], ...]:
    return (ScalingError,)


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ScalingError(f"--shard {text!r} is not I/N (e.g. 0/4 on the first of four hosts)") from None
    return index, count


def _rate(args) -> tuple[float, str]:
    if args.flops_per_sec:
        return args.flops_per_sec, "given"
    import jax

    from gpt2_jax.mfu import peak_flops

    peak = peak_flops(jax.devices()[0].device_kind)
    if peak is None:
        return CPU_FLOPS_PER_SEC, "measured on a 2-core CPU"
    return ASSUMED_MFU * peak * jax.local_device_count(), f"{ASSUMED_MFU:.0%} of peak"


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from gpt2_jax.scaling import runner
    from gpt2_jax.scaling.sweep import load_sweep

    from gpt2_jax.os_errors import check_writable

    sweep = load_sweep(args.sweep)
    out = pathlib.Path(args.out)
    check_writable(out, directory=True)
    if args.dry_run:
        rows = runner.plan(sweep, out)
        mine = {p.name for p in runner.shard_points(sweep.points, _shard(args.shard))}
        rate, why = _rate(args)
        print(f"{'point':<24} {'N':>12} {'N total':>12} {'D':>14} {'FLOPs':>10} {'6ND':>10} {'est. s':>8}")
        total = 0.0
        for r in rows:
            if r["name"] in mine:
                total += r["flops"] / rate
                print(f"{r['name']:<24} {r['params']:>12,} {r['params_total']:>12,} {r['tokens']:>14,} "
                      f"{r['flops']:>10.3g} {r['flops_6nd']:>10.3g} {r['flops'] / rate:>8.0f}")
        print(f"{len(mine)} points; FLOPs = D * (6N + 6Vd + 12LTd) (attention and logits included); estimated "
              f"{total / 60:.1f} min at {rate:.3g} FLOP/s ({why}), one point at a time, without compilation")
        return 0
    results = runner.run_sweep(sweep, out, devices_per_point=args.devices_per_point, shard=_shard(args.shard),
                               progress=not args.no_progress)
    print(f"{len(results)}/{len(sweep.points)} points finished in {out}; next: gpt2-jax sweep collect {out} --out results.csv")
    return 0


def cmd_sweep_collect(args: argparse.Namespace) -> int:
    from gpt2_jax.os_errors import check_writable
    from gpt2_jax.scaling.collect import collect, write_csv

    check_writable(args.out, directory=False)
    rows, missing = collect(args.sweep_dir)
    path = write_csv(rows, args.out)
    print(f"{len(rows)} rows -> {path}" + (f"; not finished: {', '.join(missing)}" if missing else ""))
    return 0


def cmd_scaling_fit(args: argparse.Namespace) -> int:
    from gpt2_jax.scaling.fit import describe, fit_law, fitter, report
    from gpt2_jax.scaling.table import load_table

    from gpt2_jax.os_errors import check_writable

    fitter(args.law)  # an unknown law is refused before the file is read
    if args.plot:  # before the fit (and its bootstrap) runs
        check_writable(args.plot, directory=True)
    table = load_table(args.results, loss_column=args.loss_column)
    result, boot = fit_law(table, args.law, target_flops=args.target_flops, k=args.bootstrap, seed=args.seed,
                           level=args.level, progress=not args.json)
    print(f"law {args.law} on {len(table)} rows of {args.results} ({args.loss_column}); objective {result.objective:.6g}"
          + (f"; bootstrap {boot.k} resamples (seed {boot.seed}, {boot.failed} refused), {boot.level:.0%} intervals"
             if boot else ""))
    print("\n".join(describe(result, boot)))
    if args.plot:
        from gpt2_jax.scaling.plots import plot_all

        for path in plot_all(table, result, boot, args.plot, csv_path=args.results):
            print(f"plot -> {path}")
    if args.json:
        print(json.dumps(report(result, boot, table, args.target_flops)))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a scaling sweep file or collect its results")
    ssub = p.add_subparsers(dest="sweep_command", required=True)
    r = ssub.add_parser("run", help="train every point of a sweep file (resumable)")
    r.add_argument("sweep", help="a .py file with get_sweep()")
    r.add_argument("--out", required=True, help="sweep directory (rerun the same command to resume)")
    r.add_argument("--dry-run", action="store_true", help="list points with N, D, FLOPs and estimated time; train nothing")
    r.add_argument("--devices-per-point", type=nonneg_int, default=None,
                   help="pack points side by side on groups of this many local devices (0 = all; default: the sweep's)")
    r.add_argument("--shard", default=None, metavar="I/N", help="run only every N-th point starting at I (one host of N)")
    r.add_argument("--flops-per-sec", type=positive_float, default=None, help="with --dry-run: throughput for the time estimate")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_sweep_run)
    c = ssub.add_parser("collect", help="one CSV row per finished point")
    c.add_argument("sweep_dir")
    c.add_argument("--out", required=True, help="CSV file to write")
    c.set_defaults(func=cmd_sweep_collect)

    p = sub.add_parser("scaling", help="fit scaling laws to a results table")
    ssub = p.add_subparsers(dest="scaling_command", required=True)
    f = ssub.add_parser("fit", help="fit a law (Kaplan et al. 2020 or Hoffmann et al. 2022) to a CSV")
    f.add_argument("results", help="CSV with columns params, tokens, loss (flops optional: default 6 * params * tokens)")
    f.add_argument("--law", required=True,
                   help="kaplan-n | kaplan-d | kaplan-nd | kaplan-c | chinchilla | isoflop | envelope")
    f.add_argument("--loss-column", default="loss", help="column with the loss to fit (e.g. eval_loss)")
    f.add_argument("--bootstrap", type=nonneg_int, default=0, metavar="K", help="K resamples for confidence intervals (0 = none)")
    f.add_argument("--seed", type=nonneg_int, default=0, help="bootstrap seed")
    f.add_argument("--level", type=float_in(0.0, 1.0, low_open=True, high_open=True), default=0.95, help="bootstrap interval level")
    f.add_argument("--target-flops", type=positive_float, default=None, help="compute for predictions (default: the table's largest)")
    f.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots here")
    f.add_argument("--json", action="store_true", help="last stdout line: one JSON object with the fit")
    f.set_defaults(func=cmd_scaling_fit)
