"""Out-of-sample prediction: fit a law on some rows of a results table, predict other (N, D) points.

`gpt2-jax scaling predict RESULTS.csv --law LAW --fit-on FILTER [--at params=N,tokens=D ...]` fits
LAW on the rows FILTER keeps (rowfilter.py) and predicts the loss at each `--at` point, or, without
`--at`, at every row FILTER left out. Each prediction gets a bootstrap percentile interval: the fit
rows are resampled, the law refit and every point predicted again with each refit (bootstrap.py),
so the interval carries the fit's uncertainty, not the noise of a single future run. A left-out row
is measured by its own loss; an `--at` point by the mean loss of the table's rows at the same
params and tokens (run ends only, when the table has a `final` column), and gets the error
relative to it. Any CSV with params, tokens and a loss column works: a sweep's
`collect` output or published points.

Laws that predict a loss: kaplan-n (from N), kaplan-d (from D), kaplan-c (from C: the flops column
or 6ND; it predicts the compute-efficient frontier's loss, not a given (N, D)), kaplan-nd and
chinchilla (from N and D). isoflop and envelope predict allocations, not losses, and are refused.

References:
  Hoffmann et al. 2022, section 3.3 and appendix D.2 (fit on smaller runs, extrapolate to Chinchilla).
  Efron and Tibshirani 1993, chapter 13 (percentile intervals).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib

import numpy as np

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.rowfilter import parse_filter
from gpt2_jax.scaling.table import REQUIRED, Table

INPUTS = {"kaplan-n": ("params",), "kaplan-d": ("tokens",), "kaplan-c": ("flops",), "kaplan-nd": ("params", "tokens"),
          "chinchilla": ("params", "tokens")}
AT_KEYS = ("params", "tokens", "flops")


@dataclasses.dataclass
class Prediction:
    params: float
    tokens: float
    flops: float
    predicted: float
    low: float | None
    high: float | None
    measured: float | None
    name: str | None = None

    def as_json(self) -> dict:
        out = {"params": self.params, "tokens": self.tokens, "predicted": self.predicted, "low": self.low,
               "high": self.high, "measured": self.measured}
        if self.name is not None:
            out["name"] = self.name
        return out


def read_rows(path: str | pathlib.Path, loss_column: str) -> tuple[list[str], list[dict]]:
    """The CSV's header and its rows as dicts of strings; the required columns are checked."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ScalingError(f"results file {str(path)!r} does not exist; make one with `gpt2-jax sweep collect`")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [{**r, "_line": i} for i, r in enumerate(reader, start=2)]  # line 1 is the header
    except UnicodeDecodeError as e:
        raise ScalingError(f"{str(path)!r} is not a UTF-8 text CSV file (byte {e.start} is {e.object[e.start]:#04x}); "
                           f"give the CSV that `gpt2-jax sweep collect` writes") from None
    for column in (*REQUIRED, loss_column):
        if column not in header:
            raise ScalingError(f"{str(path)!r} has no column {column!r} (columns: {', '.join(header) or 'none'}); "
                               f"scaling predict needs params, tokens and {loss_column}")
    return header, rows


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "nan")
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def parse_at(text: str) -> dict[str, float]:
    """`params=1e9,tokens=2e10[,flops=...]` -> {'params': 1e9, 'tokens': 2e10, ...}."""
    point = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in AT_KEYS:
            raise ScalingError(f"--at {text!r}: {part.strip()!r} is not KEY=NUMBER with KEY one of {', '.join(AT_KEYS)} "
                               f"(e.g. --at params=1e9,tokens=2e10)")
        number = _number(value.strip())
        if number is None:
            raise ScalingError(f"--at {text!r}: {key}={value.strip()!r} must be a finite number > 0")
        point[key] = number
    for key in ("params", "tokens"):
        if key not in point:
            raise ScalingError(f"--at {text!r} has no {key}=...; give both params and tokens (e.g. params=1e9,tokens=2e10)")
    point.setdefault("flops", 6.0 * point["params"] * point["tokens"])
    return point


def _table(rows: list[dict], loss_column: str, has_flops: bool, where: str) -> Table:
    values = {c: [] for c in ("params", "tokens", loss_column, "flops")}
    for i, row in enumerate(rows):
        for c in values:
            if c == "flops" and not has_flops:
                continue
            number = _number(row.get(c))
            if number is None:
                raise ScalingError(f"{where}: column {c!r} row {row.get('_line', i + 2)} is {row.get(c)!r}; every value "
                                   f"a fit uses must be a finite number > 0 (or leave the row out with --fit-on)")
            values[c].append(number)
    return Table.build(values["params"], values["tokens"], values[loss_column], values["flops"] if has_flops else None,
                       loss_column, where=where)


CURVE_LAWS = ("kaplan-c", "envelope")  # laws of the compute frontier: intermediate steps belong in them


def load_rows_for(path: str | pathlib.Path, law: str, loss_column: str, fit_on: str | None) -> tuple[Table, str]:
    """The table a fit uses, and which rows those are. With `fit_on`, the rows it keeps. Without,
    on a table with a `final` column (sweep collect --curves): every row for the frontier laws
    (kaplan-c, envelope), only final==1 rows (ends of schedules) for the others, since a loss
    midway through a schedule is not the loss of a run of that length (collect.py)."""
    header, rows = read_rows(path, loss_column)
    if fit_on is None and "final" in header and law not in CURVE_LAWS:
        fit_on = "final==1"
    keep = parse_filter(fit_on, header) if fit_on else (lambda r: True)
    kept = [r for r in rows if keep(r)]
    if not kept:
        raise ScalingError(f"--fit-on {fit_on!r} keeps none of the {len(rows)} rows of {str(path)!r}")
    return _table(kept, loss_column, "flops" in header, str(path)), f"{len(kept)} of {len(rows)} rows" + (
        f" ({fit_on})" if fit_on else "")


def _measured_at(point: dict, rows: list[dict], loss_column: str, has_final: bool) -> float | None:
    """The table's loss at an `--at` point: the mean over rows with the same (N, D), run ends only
    when the table marks them (`final`): a curve's intermediate step at the same token count is
    not a comparable point (its learning rate has not decayed)."""
    hits = [_number(r.get(loss_column)) for r in rows
            if _number(r.get("params")) == point["params"] and _number(r.get("tokens")) == point["tokens"]
            and (not has_final or _number(r.get("final")) == 1)]
    hits = [h for h in hits if h is not None]
    return float(np.mean(hits)) if hits else None


def _law_value(result: FitResult, law: str, point: dict) -> float:
    args = [point[k] for k in INPUTS[law]]
    return float(result.predict(*args))


def predict(path: str | pathlib.Path, law: str, fit_on: str, *, at: list[str] | None = None, loss_column: str = "loss",
            k: int = 200, seed: int = 0, level: float = 0.95) -> tuple[FitResult, list[Prediction], dict]:
    """(the fit on the kept rows, one Prediction per point, facts about the split for the report)."""
    from gpt2_jax.scaling.bootstrap import bootstrap
    from gpt2_jax.scaling.fit import fitter

    if law not in INPUTS:
        fitter(law)  # an unknown name gets the registry's message
        raise ScalingError(f"law {law!r} predicts an allocation, not a loss; scaling predict takes one of {', '.join(INPUTS)}")
    header, rows = read_rows(path, loss_column)
    keep = parse_filter(fit_on, header)
    fit_rows = [r for r in rows if keep(r)]
    if not fit_rows:
        raise ScalingError(f"--fit-on {fit_on!r} keeps none of the {len(rows)} rows of {str(path)!r}")
    has_flops = "flops" in header
    table = _table(fit_rows, loss_column, has_flops, str(path))
    if at:
        points = [parse_at(text) for text in at]
        names = [None] * len(points)
        measured = [_measured_at(p, rows, loss_column, "final" in header) for p in points]
    else:
        left = [r for r in rows if not keep(r)]
        if not left:
            raise ScalingError(f"--fit-on {fit_on!r} keeps every row; give --at params=...,tokens=... or a filter that "
                               f"leaves rows to predict")
        points, names = [], []
        for r in left:
            n, d = _number(r.get("params")), _number(r.get("tokens"))
            if n is None or d is None:
                raise ScalingError(f"{str(path)!r}: row {r.get('name') or '?'} to predict has params={r.get('params')!r}, "
                                   f"tokens={r.get('tokens')!r}; both must be finite numbers > 0")
            c = _number(r.get("flops")) if has_flops else None
            points.append({"params": n, "tokens": d, "flops": c or 6.0 * n * d})
            names.append(r.get("name") or None)
        measured = [_number(r.get(loss_column)) for r in left]  # each left-out row is its own measurement

    import scipy.optimize  # noqa: F401  (scipy's BLAS loaded before the thread limit, as in fit.fit_law)
    from threadpoolctl import threadpool_limits

    fn = fitter(law)
    target = max(p["flops"] for p in points)

    def with_points(result: FitResult) -> FitResult:
        preds = {f"point{i}": _law_value(result, law, p) for i, p in enumerate(points)}
        return dataclasses.replace(result, predictions={**result.predictions, **preds})

    with threadpool_limits(limits=1):
        result = with_points(fn(table, target))
        warm = {"init": result.extra["theta"]} if "theta" in result.extra else {}
        boot = bootstrap(lambda t: with_points(fn(t, target, **warm)), table, k, seed, level) if k else None
    out = []
    for i, p in enumerate(points):
        iv = boot.intervals.get(f"point{i}") if boot else None
        out.append(Prediction(p["params"], p["tokens"], p["flops"], result.predictions[f"point{i}"],
                              iv[0] if iv else None, iv[1] if iv else None, measured[i], names[i]))
    result.predictions = {k_: v for k_, v in result.predictions.items() if not k_.startswith("point")}
    facts = {"fit_rows": len(table), "rows": len(rows), "fit_on": fit_on, "loss_column": loss_column,
             "bootstrap": None if boot is None else {"k": boot.k, "seed": boot.seed, "level": boot.level,
                                                      "failed": boot.failed},
             "fit_params_max": float(table.params.max()), "fit_tokens_max": float(table.tokens.max())}
    if boot is not None:
        facts["intervals"] = {name: list(iv) for name, iv in boot.intervals.items() if not name.startswith("point")}
    return result, out, facts


def report(result: FitResult, predictions: list[Prediction], facts: dict) -> dict:
    """The one JSON object of `scaling predict --json`."""
    fit = {"law": result.law, **result.params, "objective": result.objective, **facts}
    return {"fit": fit, "predictions": [p.as_json() for p in predictions]}


def lines(result: FitResult, predictions: list[Prediction], facts: dict) -> list[str]:
    """The human-readable table: one line per prediction, error against the measured loss."""
    iv = facts.get("intervals", {})
    out = [f"law {result.law} fit on {facts['fit_rows']} of {facts['rows']} rows ({facts['fit_on']}); "
           f"{facts['loss_column']}; objective {result.objective:.4g}"]
    out += [f"  {k:<10} {v:>12.5g}" + (f"   [{iv[k][0]:.5g}, {iv[k][1]:.5g}]" if k in iv else "")
            for k, v in result.params.items()]
    out.append(f"{'point':<18} {'params':>10} {'tokens':>10} {'predicted':>10} {'interval':>21} {'measured':>9} "
               f"{'error':>7} covered")
    for p in predictions:
        interval = "" if p.low is None else f"[{p.low:.4f}, {p.high:.4f}]"
        err = "" if p.measured is None else f"{(p.predicted - p.measured) / p.measured:+.2%}"
        cov = "" if p.measured is None or p.low is None else ("yes" if p.low <= p.measured <= p.high else "no")
        out.append(f"{(p.name or '-'):<18} {p.params:>10.3g} {p.tokens:>10.3g} {p.predicted:>10.4f} {interval:>21} "
                   f"{'' if p.measured is None else f'{p.measured:.4f}':>9} {err:>7} {cov}")
    return out


def plot(path: str | pathlib.Path, result: FitResult, predictions: list[Prediction], fit_table_path: str,
         fit_on: str, loss_column: str) -> pathlib.Path:
    """Two panels: loss vs params (fit rows, predictions with intervals, measured values), and
    predicted vs measured with the y = x line and a +-2% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpt2_jax.scaling.plots import _save

    header, rows = read_rows(fit_table_path, loss_column)
    keep = parse_filter(fit_on, header)
    fit = [(float(r["params"]), float(r[loss_column])) for r in rows if keep(r) and _number(r.get(loss_column))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    left.scatter(*zip(*fit), s=14, c="0.6", label="fit rows")
    n = np.array([p.params for p in predictions])
    y = np.array([p.predicted for p in predictions])
    if all(p.low is not None for p in predictions):
        err = np.array([[p.predicted - p.low for p in predictions], [p.high - p.predicted for p in predictions]])
        left.errorbar(n, y, yerr=err, fmt="o", c="C0", capsize=3, label="predicted (interval)")
    else:
        left.scatter(n, y, c="C0", label="predicted")
    meas = [(p.params, p.measured) for p in predictions if p.measured is not None]
    if meas:
        left.scatter(*zip(*meas), marker="x", c="C3", s=40, label="measured")
    left.set(xscale="log", xlabel="params (N)", ylabel=loss_column, title=f"{result.law} fit on {fit_on}")
    left.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels collide over a narrow range
    left.legend(fontsize=8)
    both = [p for p in predictions if p.measured is not None]
    if both:
        m = np.array([p.measured for p in both])
        pr = np.array([p.predicted for p in both])
        lo, hi = min(m.min(), pr.min()) * 0.97, max(m.max(), pr.max()) * 1.03
        grid = np.linspace(lo, hi, 2)
        right.plot(grid, grid, c="0.3", lw=1)
        right.fill_between(grid, grid * 0.98, grid * 1.02, color="0.85", label="+-2%")
        if all(p.low is not None for p in both):
            right.errorbar(m, pr, yerr=[pr - np.array([p.low for p in both]), np.array([p.high for p in both]) - pr],
                           fmt="o", capsize=3)
        else:
            right.scatter(m, pr)
        right.set(xlabel=f"measured {loss_column}", ylabel="predicted", title="predicted vs measured")
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no measured values yet", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = _save(fig, path)
    plt.close(fig)
    return out
