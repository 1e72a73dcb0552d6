"""Bootstrap confidence intervals for a law's parameters and derived predictions.

Rows are resampled with replacement K times (numpy's PCG64 generator seeded with `seed`, so the
intervals are reproducible), the same fitter is rerun on each resample, and every fitted value
(parameters and predictions such as N_opt at a target C) gets the percentile interval at
`level`. A resample the fitter refuses (e.g. fewer than 3 distinct sizes drawn) is counted as
failed and left out; the count is reported, since many failures mean the interval describes
only the lucky resamples.

References:
  Efron and Tibshirani 1993, "An Introduction to the Bootstrap", chapter 13 (percentile intervals).
  Hoffmann et al. 2022, section 3 (bootstrapped exponents, 10th-90th percentiles).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.table import Table


@dataclasses.dataclass
class Bootstrap:
    k: int
    seed: int
    level: float
    failed: int
    samples: dict[str, np.ndarray]  # value name -> [successful resamples]
    intervals: dict[str, tuple[float, float]]


def bootstrap(fitter: Callable[[Table], FitResult], table: Table, k: int, seed: int = 0, level: float = 0.95,
              progress: bool = False) -> Bootstrap:
    """Refits `fitter` on `k` resamples of `table`'s rows; percentile intervals at `level`."""
    from tqdm import tqdm

    if k < 2:
        raise ScalingError(f"--bootstrap {k}: use at least 2 resamples (100 or more for stable intervals)")
    if not 0 < level < 1:
        raise ScalingError(f"bootstrap level {level} must be in (0, 1), e.g. 0.95")
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    failed = 0
    for _ in tqdm(range(k), desc="bootstrap", unit="fit", disable=not progress, dynamic_ncols=True):
        index = rng.integers(0, len(table), len(table))
        try:
            fit = fitter(table.take(index))
        except ScalingError:
            failed += 1
            continue
        for name, v in fit.values().items():
            values.setdefault(name, []).append(v)
    if failed == k:
        raise ScalingError(f"all {k} bootstrap resamples were refused by the fitter; the table has too few distinct "
                           f"points to resample")
    samples = {name: np.asarray(v) for name, v in values.items()}
    tail = 100 * (1 - level) / 2
    intervals = {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for name, v in samples.items()}
    return Bootstrap(k, seed, level, failed, samples, intervals)
