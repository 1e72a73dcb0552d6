"""Scaling-law sweeps and fits: sweep definitions, a resumable packed runner, results tables, law fits, plots.

A sweep is a Python file whose `get_sweep()` returns a `Sweep` (sweep.py); `runner.run_sweep`
trains every point through `gpt2_jax.train.train`, `collect.collect` turns the sweep directory
into one CSV row per point, and `fit.fit_law` fits Kaplan et al. 2020 or Hoffmann et al. 2022
laws to such a table with bootstrap intervals (bootstrap.py), and `predict.predict` fits on the
rows a filter keeps (rowfilter.py) and predicts others out of sample. Sweeps can branch WSD
cooldowns off a long run's checkpoints (sweep.wsd_branches); collect adds whole-run curves and
zero-shot columns (zeroshot.py). Heavy modules (JAX, scipy,
matplotlib) are imported by the submodules that need them, not here.

References:
  Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361.
  Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations".
"""

from gpt2_jax.scaling.errors import ScalingError

__all__ = ["ScalingError"]
