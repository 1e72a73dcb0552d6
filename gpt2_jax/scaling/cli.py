"""The `gpt2-jax sweep run|collect` and `gpt2-jax scaling fit` commands.

`sweep run SWEEP.py --out DIR` trains the points of a sweep file (resumable; packed side by side
with --devices-per-point), `--dry-run` only lists them with N, D, FLOPs and an estimated time.
`sweep collect DIR --out results.csv` writes the results table. `scaling predict` fits on the rows a
filter keeps and predicts the others or named (N, D) points (predict.py). `scaling fit results.csv --law L`
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

from gpt2_jax.cli_types import float_in, nonneg_int, positive_float, positive_int
from gpt2_jax.scaling.errors import ScalingError

# Assumed sustained training throughput for --dry-run time estimates when none is given:
# a fraction of peak on known accelerators (gpt2_jax/chips.py); on CPUs a rate measured here
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
    if args.compile_only or args.topology:
        return _compile_largest_point(sweep, out, args)
    check_writable(out, directory=True)
    if args.dry_run:
        rows = runner.plan(sweep, out)
        mine = {p.name for p in runner.shard_points(sweep.points, _shard(args.shard))}
        rate, why = _rate(args)
        print(f"{'point':<24} {'N':>12} {'N total':>12} {'D':>14} {'FLOPs':>10} {'6ND':>10} {'est. s':>8}")
        total = 0.0
        for r in rows:
            if r["name"] in mine:  # a branch trains only its cooldown; the rest is its parent's
                total += r["flops"] * (r["cooldown_tokens"] / r["tokens"] if r["parent"] else 1.0) / rate
                print(f"{r['name']:<24} {r['params']:>12,} {r['params_total']:>12,} {r['tokens']:>14,} "
                      f"{r['flops']:>10.3g} {r['flops_6nd']:>10.3g} {r['flops'] / rate:>8.0f}")
        print(f"{len(mine)} points; FLOPs = D * (6N + 6Vd + 12LTd) (attention and logits included; a branch's FLOPs "
              f"count its parent's steps, its time only its cooldown); estimated "
              f"{total / 60:.1f} min at {rate:.3g} FLOP/s ({why}), one point at a time, without compilation")
        return 0
    results = runner.run_sweep(sweep, out, devices_per_point=args.devices_per_point, shard=_shard(args.shard),
                               progress=not args.no_progress)
    print(f"{len(results)}/{len(sweep.points)} points finished in {out}; next: gpt2-jax sweep collect {out} --out results.csv")
    return 0


def _compile_largest_point(sweep, out: pathlib.Path, args: argparse.Namespace) -> int:
    """`sweep run --compile-only [--topology T --slices N]`: the point that needs the most memory
    (most parameters, then most tokens per step) compiled for the devices one point gets (the
    first --devices-per-point of them; all by default), through train's compile report. Smaller
    points need less per device, so one compile answers "does the sweep fit" before pod time."""
    import dataclasses

    import jax

    from gpt2_jax import compile_report, topology
    from gpt2_jax.scaling.sweep import total_params

    devices = topology.devices(args.topology, args.slices) if args.topology else jax.devices()
    k = sweep.devices_per_point if args.devices_per_point is None else args.devices_per_point
    devices = devices[:k] if k else devices
    largest = max(sweep.points, key=lambda p: (total_params(dataclasses.replace(p.model, n_vocab=sweep.base.model.n_vocab)),
                                               sweep.base.batch_size))
    cfg = sweep.config(largest, out / largest.name)
    print(f"compile-only: the largest point {largest.name!r} on {len(devices)} device(s)")
    compile_report.compile_report(cfg, devices, topology=args.topology)
    return 0


def cmd_sweep_collect(args: argparse.Namespace) -> int:
    from gpt2_jax.os_errors import check_writable
    from gpt2_jax.scaling.collect import collect, write_csv

    check_writable(args.out, directory=False)
    rows, missing = collect(args.sweep_dir, curves=args.curves, zeroshot=args.zeroshot, zeroshot_limit=args.zeroshot_limit)
    path = write_csv(rows, args.out)
    print(f"{len(rows)} rows -> {path}" + (f"; not finished: {', '.join(missing)}" if missing else ""))
    return 0


def cmd_scaling_fit(args: argparse.Namespace) -> int:
    from gpt2_jax.scaling.fit import describe, fit_law, fitter, report
    from gpt2_jax.scaling.table import load_table

    from gpt2_jax.os_errors import check_writable
    from gpt2_jax.scaling.predict import load_rows_for

    fitter(args.law)  # an unknown law is refused before the file is read
    if args.plot:  # before the fit (and its bootstrap) runs
        check_writable(args.plot, directory=True)
    table, which = load_rows_for(args.results, args.law, args.loss_column, args.fit_on)
    result, boot = fit_law(table, args.law, target_flops=args.target_flops, k=args.bootstrap, seed=args.seed,
                           level=args.level, progress=not args.json)
    print(f"law {args.law} on {which} of {args.results} ({args.loss_column}); objective {result.objective:.6g}"
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


def cmd_scaling_predict(args: argparse.Namespace) -> int:
    from gpt2_jax.scaling import predict

    if not 0 < args.level < 1:
        raise ScalingError(f"--level {args.level} must be in (0, 1), e.g. 0.95")
    if args.bootstrap < 0:
        raise ScalingError(f"--bootstrap {args.bootstrap} must be >= 0 (0 = no intervals)")
    result, points, facts = predict.predict(args.results, args.law, args.fit_on, at=args.at, loss_column=args.loss_column,
                                            k=args.bootstrap, seed=args.seed, level=args.level)
    if not args.json:
        print("\n".join(predict.lines(result, points, facts)))
    if args.plot:
        path = predict.plot(args.plot, result, points, args.results, args.fit_on, args.loss_column)
        if not args.json:
            print(f"plot -> {path}")
    if args.json:
        print(json.dumps(predict.report(result, points, facts)))
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
    r.add_argument("--compile-only", action="store_true",
                   help="train nothing: compile the largest point for the devices one point gets and report its memory")
    r.add_argument("--topology", default=None, metavar="NAME", help="with --compile-only: a TPU slice, e.g. v5e-16")
    r.add_argument("--slices", type=positive_int, default=1, metavar="N", help="with --topology: N slices over DCN")
    r.set_defaults(func=cmd_sweep_run)
    c = ssub.add_parser("collect", help="one CSV row per finished point")
    c.add_argument("sweep_dir")
    c.add_argument("--out", required=True, help="CSV file to write")
    c.add_argument("--curves", action="store_true",
                   help="also one row per intermediate eval step (final=0), for the L(C) envelope")
    c.add_argument("--zeroshot", default=None, metavar="DATA",
                   help="also WikiText-2, PTB and LAMBADA zero-shot columns per point (gpt2-jax eval --data: a folder "
                        "or wikitext2,ptb,lambada paths); cached per point")
    c.add_argument("--zeroshot-limit", type=int, default=None, metavar="N", help="evaluate only the first N documents")
    c.set_defaults(func=cmd_sweep_collect)

    p = sub.add_parser("scaling", help="fit scaling laws to a results table")
    ssub = p.add_subparsers(dest="scaling_command", required=True)
    f = ssub.add_parser("fit", help="fit a law (Kaplan et al. 2020 or Hoffmann et al. 2022) to a CSV")
    f.add_argument("results", help="CSV with columns params, tokens, loss (flops optional: default 6 * params * tokens)")
    f.add_argument("--law", required=True,
                   help="kaplan-n | kaplan-d | kaplan-nd | kaplan-c | chinchilla | isoflop | envelope")
    f.add_argument("--loss-column", default="loss", help="column with the loss to fit (e.g. eval_loss)")
    f.add_argument("--fit-on", default=None, metavar="FILTER",
                   help="rows to fit, e.g. 'final==1'; default: all, but with a final column only final==1 rows "
                        "for the L(N, D) laws (kaplan-c and envelope take whole curves)")
    f.add_argument("--bootstrap", type=nonneg_int, default=0, metavar="K", help="K resamples for confidence intervals (0 = none)")
    f.add_argument("--seed", type=nonneg_int, default=0, help="bootstrap seed")
    f.add_argument("--level", type=float_in(0.0, 1.0, low_open=True, high_open=True), default=0.95, help="bootstrap interval level")
    f.add_argument("--target-flops", type=positive_float, default=None, help="compute for predictions (default: the table's largest)")
    f.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots here")
    f.add_argument("--json", action="store_true", help="last stdout line: one JSON object with the fit")
    f.set_defaults(func=cmd_scaling_fit)
    q = ssub.add_parser("predict", help="fit a law on some rows, predict others (out-of-sample) with intervals")
    q.add_argument("results", help="CSV with columns params, tokens and the loss column")
    q.add_argument("--law", required=True, help="kaplan-n | kaplan-d | kaplan-c | kaplan-nd | chinchilla")
    q.add_argument("--fit-on", required=True, metavar="FILTER",
                   help="rows to fit on, e.g. 'params<=1e9' or 'params<1e6 and final==1' (<= >= < > == !=)")
    q.add_argument("--at", action="append", default=None, metavar="params=N,tokens=D",
                   help="a point to predict (repeatable); default: every row --fit-on leaves out")
    q.add_argument("--loss-column", default="loss", help="column with the loss (e.g. eval_bits_per_byte)")
    q.add_argument("--bootstrap", type=int, default=200, metavar="K", help="K resamples for the intervals (0 = none)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.add_argument("--level", type=float, default=0.95, help="interval level")
    q.add_argument("--plot", default=None, metavar="FILE", help="PNG: loss vs params and predicted vs measured")
    q.add_argument("--json", action="store_true", help="print one JSON object {fit, predictions} instead of the table")
    q.set_defaults(func=cmd_scaling_predict)
