"""Hoffmann et al. 2022 approach 2: isoFLOP profiles, their minima, then N_opt(C) and D_opt(C).

Runs are grouped by compute: sorted by log10 C, a new group starts wherever two neighbours are
more than `tolerance` decades apart (sweep.isoflop points of one budget differ only by the
rounding of their step counts). In each group with at least 3 distinct model sizes a parabola
in ln N is fit to the loss; its vertex is N_opt of that budget (groups whose parabola opens
downward have no minimum and are left out). D_opt comes from a parabola in ln D the same way, so
it follows the table's own FLOPs convention rather than assuming C = 6ND. Then
N_opt = k_N C^a and D_opt = k_D C^b are fit by least squares in log-log space; the objective is
the summed squared error of the parabolas (loss units).

References:
  Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556,
  section 3.2 and Figure 3 (fitted a = 0.49, b = 0.51).
"""

from __future__ import annotations

import numpy as np

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.table import Table

TOLERANCE_DECADES = 0.05


def budgets(table: Table, tolerance: float = TOLERANCE_DECADES) -> list[np.ndarray]:
    """Row indices of each compute group, by increasing compute."""
    order = np.argsort(table.flops, kind="stable")
    log_c = np.log10(table.flops[order])
    cuts = np.flatnonzero(np.diff(log_c) > tolerance) + 1
    return np.split(order, cuts)


def _vertex(x: np.ndarray, loss: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """(argmin x, SSE, coefficients) of a parabola in ln x; None if it has no minimum."""
    coef = np.polyfit(np.log(x), loss, 2)
    if coef[0] <= 0:
        return None
    sse = float(np.sum((np.polyval(coef, np.log(x)) - loss) ** 2))
    return float(np.exp(-coef[1] / (2 * coef[0]))), sse, coef


def fit_isoflop(table: Table, target_flops: float | None = None, tolerance: float = TOLERANCE_DECADES) -> FitResult:
    profiles = []
    for rows in budgets(table, tolerance):
        if len(np.unique(table.params[rows])) < 3 or len(np.unique(table.tokens[rows])) < 3:
            continue
        by_n, by_d = _vertex(table.params[rows], table.loss[rows]), _vertex(table.tokens[rows], table.loss[rows])
        if by_n is None or by_d is None:
            continue
        profiles.append({"flops": float(np.exp(np.mean(np.log(table.flops[rows])))), "rows": rows, "N_opt": by_n[0],
                         "D_opt": by_d[0], "sse": by_n[1], "coef_N": by_n[2]})
    if len(profiles) < 2:
        raise ScalingError(f"law 'isoflop' needs at least 2 compute budgets with 3+ model sizes each and a minimum "
                           f"inside (found {len(profiles)}); group runs by FLOPs within {tolerance} decades, e.g. "
                           f"with gpt2_jax.scaling.sweep.isoflop")
    c = np.array([p["flops"] for p in profiles])
    a, log_kn = np.polyfit(np.log(c), np.log([p["N_opt"] for p in profiles]), 1)
    b, log_kd = np.polyfit(np.log(c), np.log([p["D_opt"] for p in profiles]), 1)
    target = target_flops or float(table.flops.max())
    k_n, k_d = float(np.exp(log_kn)), float(np.exp(log_kd))
    return FitResult("isoflop", {"a": float(a), "b": float(b), "k_N": k_n, "k_D": k_d},
                     float(sum(p["sse"] for p in profiles)),
                     {"N_opt": k_n * target**a, "D_opt": k_d * target**b}, extra={"profiles": profiles})
