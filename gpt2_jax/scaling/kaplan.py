"""Kaplan et al. 2020 laws: L(N), L(D), L(N, D) (their eq. 1.5) and L(C_min).

  L(N)      = (N_c / N)^alpha_N                                   eq. 1.1
  L(D)      = (D_c / D)^alpha_D                                   eq. 1.2
  L(C_min)  = (C_c / C_min)^alpha_C                               eq. 1.3
  L(N, D)   = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D   eq. 1.5

N is the non-embedding parameter count, D tokens, C training FLOPs. Kaplan fit L(N) to models
trained to convergence and L(D) to large models stopped early; from a grid of runs we take, for
each N, the lowest loss any run of that size reached (and for each D, the lowest over sizes),
the closest a finite grid gets to those limits. L(C_min) is fit to the compute-efficient
frontier: the runs whose loss is lower than that of every run using less or equal compute.
The one-variable laws are straight lines in log-log space, fit by least squares on log L;
L(N, D) is fit by least squares on log L too (scipy's trust-region `least_squares`, from a
small grid of starting exponents, scales set so each term alone matches the median loss).

References:
  Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361, eqs. 1.1-1.5
  and Table 5 (fitted values: alpha_N 0.076, N_c 8.8e13; alpha_D 0.095, D_c 5.4e13; C_c 3.1e8 PF-days).
"""

from __future__ import annotations

import itertools

import numpy as np

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.table import Table


def _best_per(keys: np.ndarray, table: Table) -> tuple[np.ndarray, np.ndarray]:
    """(distinct key values, lowest loss among rows with that key)."""
    distinct = np.unique(keys)
    return distinct, np.array([table.loss[keys == k].min() for k in distinct])


def _power_law(x: np.ndarray, loss: np.ndarray, law: str, what: str) -> tuple[float, float, float]:
    """Fits L = (x_c / x)^alpha on log L = alpha ln x_c - alpha ln x; (alpha, x_c, SSE of log L)."""
    if len(np.unique(x)) < 3:
        raise ScalingError(f"law {law!r} needs at least 3 distinct {what} values (2 parameters), got {len(np.unique(x))}")
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    alpha = -slope
    if not alpha > 0:
        raise ScalingError(f"law {law!r}: the loss does not fall with {what} (fitted exponent {alpha:.3g} <= 0); "
                           f"no power law (x_c / x)^alpha fits these rows")
    residual = np.log(loss) - (intercept + slope * np.log(x))
    with np.errstate(over="ignore"):  # a nearly flat law puts x_c beyond float range: inf, not a warning
        x_c = float(np.exp(intercept / alpha))
    return float(alpha), x_c, float(np.sum(residual**2))


def fit_n(table: Table, target_flops: float | None = None) -> FitResult:
    """L(N) = (N_c / N)^alpha_N over the best loss of each model size."""
    n, loss = _best_per(table.params, table)
    alpha, n_c, sse = _power_law(n, loss, "kaplan-n", "model size (params)")
    return FitResult("kaplan-n", {"N_c": n_c, "alpha_N": alpha}, sse, predict=lambda N: (n_c / N) ** alpha,
                     extra={"x": n, "loss": loss, "x_name": "params"})


def fit_d(table: Table, target_flops: float | None = None) -> FitResult:
    """L(D) = (D_c / D)^alpha_D over the best loss at each token count."""
    d, loss = _best_per(table.tokens, table)
    alpha, d_c, sse = _power_law(d, loss, "kaplan-d", "token count (tokens)")
    return FitResult("kaplan-d", {"D_c": d_c, "alpha_D": alpha}, sse, predict=lambda D: (d_c / D) ** alpha,
                     extra={"x": d, "loss": loss, "x_name": "tokens"})


def compute_frontier(table: Table) -> np.ndarray:
    """Indices of runs with lower loss than every run with less or equal compute, by compute."""
    order = np.argsort(table.flops, kind="stable")
    keep, best = [], np.inf
    for i in order:
        if table.loss[i] < best:
            keep.append(i)
            best = table.loss[i]
    return np.array(keep, dtype=int)


def fit_c(table: Table, target_flops: float | None = None) -> FitResult:
    """L(C_min) = (C_c / C_min)^alpha_C over the compute-efficient frontier; predicts L at target C."""
    front = compute_frontier(table)
    c, loss = table.flops[front], table.loss[front]
    alpha, c_c, sse = _power_law(c, loss, "kaplan-c", "frontier compute (flops)")
    target = target_flops or float(table.flops.max())
    return FitResult("kaplan-c", {"C_c": c_c, "alpha_C": alpha}, sse, {"loss_at_target": (c_c / target) ** alpha},
                     predict=lambda C: (c_c / C) ** alpha, extra={"x": c, "loss": loss, "x_name": "flops"})


def _log_loss_nd(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    log_nc, log_dc, alpha_n, alpha_d = theta
    return alpha_d * np.logaddexp((alpha_n / alpha_d) * (log_nc - log_n), log_dc - log_d)


def fit_nd(table: Table, target_flops: float | None = None, init: np.ndarray | None = None) -> FitResult:
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (eq. 1.5), least squares on log L.
    With `init` (the full-data solution, for bootstrap refits) only that start is used."""
    from scipy.optimize import least_squares

    table.require(4, "kaplan-nd")
    for what, col in (("model sizes (params)", table.params), ("token counts (tokens)", table.tokens)):
        if len(np.unique(col)) < 2:
            raise ScalingError(f"law 'kaplan-nd' needs at least 2 distinct {what}; the table has only {col[0]:g}")
    log_n, log_d, log_l = np.log(table.params), np.log(table.tokens), np.log(table.loss)
    median = float(np.median(log_l))
    # Scales at which each term alone would give the median loss, for a grid of exponents.
    starts = [np.array([np.median(log_n) + median / a_n, np.median(log_d) + median / a_d, a_n, a_d])
              for a_n, a_d in itertools.product((0.05, 0.2, 0.8), repeat=2)] if init is None else [np.asarray(init)]
    best = None
    for start in starts:
        sol = least_squares(lambda t: _log_loss_nd(t, log_n, log_d) - log_l, start, method="trf",
                            bounds=([-np.inf, -np.inf, 1e-4, 1e-4], [np.inf, np.inf, 10.0, 10.0]))
        if best is None or sol.cost < best.cost:
            best = sol
    log_nc, log_dc, alpha_n, alpha_d = best.x
    theta = best.x.copy()
    return FitResult("kaplan-nd", {"N_c": float(np.exp(log_nc)), "D_c": float(np.exp(log_dc)), "alpha_N": float(alpha_n),
                                   "alpha_D": float(alpha_d)}, float(2 * best.cost),
                     predict=lambda N, D: np.exp(_log_loss_nd(theta, np.log(N), np.log(D))), extra={"theta": theta})
