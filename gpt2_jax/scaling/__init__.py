"""Scaling-law sweeps and fits: sweep definitions, a resumable packed runner, results tables, law fits, plots.

A sweep is a Python file whose `get_sweep()` returns a `Sweep` (sweep.py); `runner.run_sweep`
trains every point through `gpt2_jax.train.train`, `collect.collect` turns the sweep directory
into one CSV row per point, and `fit.fit_law` fits Kaplan et al. 2020 or Hoffmann et al. 2022
laws to such a table with bootstrap intervals (bootstrap.py). Heavy modules (JAX, scipy,
matplotlib) are imported by the submodules that need them, not here.

References:
  Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361.
  Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
"""

from gpt2_jax.scaling.errors import ScalingError

__all__ = ["ScalingError"]
