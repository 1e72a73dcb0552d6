"""The law registry behind `gpt2-jax scaling fit`: names, fitters and the JSON report.

  kaplan-n    L(N)       = (N_c/N)^alpha_N                      Kaplan et al. 2020 eq. 1.1
  kaplan-d    L(D)       = (D_c/D)^alpha_D                      eq. 1.2
  kaplan-nd   L(N, D)    = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D   eq. 1.5
  kaplan-c    L(C_min)   = (C_c/C_min)^alpha_C                  eq. 1.3
  chinchilla  L(N, D)    = E + A/N^alpha + B/D^beta (Huber)     Hoffmann et al. 2022 approach 3
  isoflop     N_opt = k_N C^a, D_opt = k_D C^b from isoFLOP parabolas   approach 2
  envelope    N_opt = k_N C^a, D_opt = k_D C^b on the compute frontier  approach 1

References:
  Kaplan et al. 2020, arXiv:2001.08361; Hoffmann et al. 2022, arXiv:2203.15556.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable

from gpt2_jax.scaling import chinchilla, isoflop, kaplan
from gpt2_jax.scaling.bootstrap import Bootstrap, bootstrap
from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.table import Table

LAWS: dict[str, Callable[..., FitResult]] = {
    "kaplan-n": kaplan.fit_n,
    "kaplan-d": kaplan.fit_d,
    "kaplan-nd": kaplan.fit_nd,
    "kaplan-c": kaplan.fit_c,
    "chinchilla": chinchilla.fit_parametric,
    "isoflop": isoflop.fit_isoflop,
    "envelope": chinchilla.fit_envelope,
}


def fitter(law: str) -> Callable[..., FitResult]:
    if law not in LAWS:
        hint = difflib.get_close_matches(law, LAWS, n=1)
        raise ScalingError(f"unknown law {law!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                           + f"; choose one of {', '.join(LAWS)}")
    return LAWS[law]


def fit_law(table: Table, law: str, *, target_flops: float | None = None, k: int = 0, seed: int = 0,
            level: float = 0.95, progress: bool = False) -> tuple[FitResult, Bootstrap | None]:
    """The fit on the whole table and, with k > 0, its bootstrap over k resamples."""
    if target_flops is not None and not (target_flops > 0 and math.isfinite(target_flops)):
        raise ScalingError(f"--target-flops {target_flops} must be a finite number > 0")
    import scipy.optimize  # noqa: F401  (load scipy's own BLAS before limiting threads: the limit binds loaded libraries only)
    from threadpoolctl import threadpool_limits

    fn = fitter(law)
    target = target_flops or float(table.flops.max())
    # One BLAS thread: these problems have 5 unknowns, and a multi-threaded BLAS inside scipy's
    # L-BFGS-B made each fit ~8x slower on a busy 2-core machine (measured, thread spin-waits).
    with threadpool_limits(limits=1):
        result = fn(table, target)
        # Refits start from the full-data solution where the fitter takes one (chinchilla's L-BFGS).
        warm = {"init": result.extra["theta"]} if "theta" in result.extra else {}
        boot = bootstrap(lambda t: fn(t, target, **warm), table, k, seed, level, progress) if k else None
    return result, boot


def report(result: FitResult, boot: Bootstrap | None, table: Table, target_flops: float | None) -> dict:
    """The JSON object of `scaling fit --json`: parameters at the top level, then the rest."""
    out = {"law": result.law, **result.params, "objective": result.objective, "predictions": result.predictions,
           "target_flops": target_flops or float(table.flops.max()), "rows": len(table), "loss_column": table.loss_column}
    if boot is not None:
        out["intervals"] = {name: list(iv) for name, iv in boot.intervals.items()}
        out["bootstrap"] = {"k": boot.k, "seed": boot.seed, "level": boot.level, "failed": boot.failed}
    return out


def describe(result: FitResult, boot: Bootstrap | None) -> list[str]:
    """Human-readable lines: one per parameter and prediction, with intervals if bootstrapped."""
    lines = []
    for name, value in result.values().items():
        iv = boot.intervals.get(name) if boot else None
        lines.append(f"  {name:<15} {value:>12.5g}" + (f"   [{iv[0]:.5g}, {iv[1]:.5g}]" if iv else ""))
    return lines
