"""Hoffmann et al. 2022 (Chinchilla) approach 3, the parametric loss, and approach 1, the envelope.

Approach 3 models the final loss as L(N, D) = E + A / N^alpha + B / D^beta and, as their
appendix D.2 describes, fits it by minimising the Huber loss (delta = 1e-3) between the predicted
and observed log loss,
    sum_i Huber_delta( LSE(a - alpha ln N_i, b - beta ln D_i, e) - ln L_i ),   A = e^a, B = e^b, E = e^e,
with L-BFGS from a grid of initial values (alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ...,
1}, a, b in {0, 5, ..., 25}). Their paper runs L-BFGS from every grid point; we evaluate the
objective on the whole grid and run L-BFGS (scipy L-BFGS-B, analytic gradient) from the 8 best
grid points, which costs milliseconds instead of seconds and matters for the bootstrap. The
compute-optimal allocation under C = 6ND follows in closed form (their eq. 4):
    N_opt(C) = G (C/6)^(beta/(alpha+beta)),  D_opt(C) = G^-1 (C/6)^(alpha/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)).

Approach 1 takes, for each compute budget, the run with the lowest loss (here: the runs on the
compute-efficient frontier of the table, kaplan.compute_frontier) and fits N_opt = k_N C^a and
D_opt = k_D C^b by least squares in log-log space. With final losses of a grid of runs (one
cosine schedule per run length, as Hoffmann recommend), the frontier is the envelope over the
runs' ends; intermediate checkpoints of the same run are not used.

References:
  Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556,
  sections 3.1 and 3.3, eq. 2 and 4, appendix D.2 (fitted: E 1.69, A 406.4, B 410.7, alpha 0.34,
  beta 0.28); Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (the Huber fit).
"""

from __future__ import annotations

import itertools

import numpy as np

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.table import Table

HUBER_DELTA = 1e-3
GRID = np.array(list(itertools.product(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(0, 2.5, 0.5),
                                       np.arange(0, 2.5, 0.5), np.arange(-1, 1.5, 0.5))))  # a, b, alpha, beta, e
STARTS = 8


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber value and derivative, elementwise."""
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    return value, np.where(small, r, delta * np.sign(r))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    """Summed Huber loss of log-loss residuals and its gradient in (a, b, alpha, beta, e)."""
    a, b, alpha, beta, e = theta
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    lse = np.logaddexp(np.logaddexp(t_n, t_d), e)
    w_n, w_d, w_e = np.exp(t_n - lse), np.exp(t_d - lse), np.exp(e - lse)  # d lse / d term
    value, slope = _huber(lse - log_l, delta)
    g_n, g_d = slope * w_n, slope * w_d
    grad = np.array([g_n.sum(), g_d.sum(), -(g_n @ log_n), -(g_d @ log_d), (slope * w_e).sum()])
    return float(value.sum()), grad


def _grid_values(log_n, log_d, log_l, delta) -> np.ndarray:
    a, b, alpha, beta, e = (GRID[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(GRID), len(log_n)))])
    return _huber(np.logaddexp(np.logaddexp(terms[0], terms[1]), terms[2]) - log_l, delta)[0].sum(axis=1)


def optimal_allocation(p: dict, flops: float) -> tuple[float, float, float]:
    """(N_opt, D_opt, L at them) for compute `flops` = 6 N D under the fitted law (eq. 4)."""
    alpha, beta = p["alpha"], p["beta"]
    g = (alpha * p["A"] / (beta * p["B"])) ** (1.0 / (alpha + beta))
    n = g * (flops / 6.0) ** (beta / (alpha + beta))
    d = (flops / 6.0) / n
    return n, d, p["E"] + p["A"] / n**alpha + p["B"] / d**beta


def fit_parametric(table: Table, target_flops: float | None = None, delta: float = HUBER_DELTA,
                   init: np.ndarray | None = None) -> FitResult:
    """Approach 3: E + A/N^alpha + B/D^beta by Huber on log loss, L-BFGS from the grid's best starts.
    With `init` (the full-data solution, for bootstrap refits) L-BFGS starts there and from the
    two best grid points only."""
    from scipy.optimize import minimize

    table.require(5, "chinchilla")
    for what, col in (("model sizes (params)", table.params), ("token counts (tokens)", table.tokens)):
        if len(np.unique(col)) < 2:
            raise ScalingError(f"law 'chinchilla' needs at least 2 distinct {what}, got only {col[0]:g}; "
                               f"L(N, D) cannot separate N and D otherwise")
    log_n, log_d, log_l = np.log(table.params), np.log(table.tokens), np.log(table.loss)
    starts = GRID[np.argsort(_grid_values(log_n, log_d, log_l, delta), kind="stable")[:STARTS if init is None else 2]]
    if init is not None:
        starts = np.concatenate([np.asarray(init)[None], starts])
    best = None
    for start in starts:
        sol = minimize(_objective, start, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                       options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-10})
        if best is None or sol.fun < best.fun:
            best = sol
    a, b, alpha, beta, e = best.x
    params = {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha), "beta": float(beta)}
    predictions = {}
    if alpha > 0 and beta > 0:
        n_opt, d_opt, l_opt = optimal_allocation(params, target_flops or float(table.flops.max()))
        predictions = {"N_opt": n_opt, "D_opt": d_opt, "loss_opt": l_opt, "a": beta / (alpha + beta),
                       "b": alpha / (alpha + beta)}
    return FitResult("chinchilla", params, float(best.fun), predictions,
                     predict=lambda N, D: params["E"] + params["A"] / N**alpha + params["B"] / D**beta,
                     extra={"theta": best.x.copy()})


def _log_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    residual = np.log(y) - (intercept + slope * np.log(x))
    return float(slope), float(np.exp(intercept)), float(np.sum(residual**2))


def fit_envelope(table: Table, target_flops: float | None = None) -> FitResult:
    """Approach 1: N_opt = k_N C^a and D_opt = k_D C^b over the compute-efficient frontier."""
    from gpt2_jax.scaling.kaplan import compute_frontier

    front = compute_frontier(table)
    c = table.flops[front]
    if len(np.unique(c)) < 3:
        raise ScalingError(f"law 'envelope' needs at least 3 runs on the compute-efficient frontier (2 parameters per "
                           f"power law), got {len(np.unique(c))}; add runs at more compute budgets")
    a, k_n, sse_n = _log_line(c, table.params[front])
    b, k_d, sse_d = _log_line(c, table.tokens[front])
    target = target_flops or float(table.flops.max())
    return FitResult("envelope", {"a": a, "b": b, "k_N": k_n, "k_D": k_d}, sse_n + sse_d,
                     {"N_opt": k_n * target**a, "D_opt": k_d * target**b},
                     extra={"frontier_flops": c, "frontier_params": table.params[front],
                            "frontier_tokens": table.tokens[front], "frontier_loss": table.loss[front]})
