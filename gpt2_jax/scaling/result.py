"""What a law fit returns: fitted parameters, the objective value, derived predictions, plot data.

Every fitter (kaplan.py, chinchilla.py, isoflop.py) returns a `FitResult`; bootstrap.py refits
on resamples and reads `values()` (parameters and predictions alike) to form intervals.

References:
  gpt2_jax/scaling/fit.py (the law registry).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass
class FitResult:
    law: str
    params: dict[str, float]  # the law's own parameter names (e.g. E, A, B, alpha, beta)
    objective: float  # the minimised value (e.g. Huber loss of log-loss residuals)
    predictions: dict[str, float] = dataclasses.field(default_factory=dict)  # e.g. N_opt at a target C
    predict: Callable | None = None  # loss (or N_opt/D_opt) as a function of the inputs, for plots
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # data behind the fit, for plots

    def values(self) -> dict[str, float]:
        return {**self.params, **self.predictions}
