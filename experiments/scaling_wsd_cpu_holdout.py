"""The holdout of the WSD scaling study: one model 4.8x larger than any fitted, trained after the prediction.

Command:   gpt2-jax sweep run experiments/scaling_wsd_cpu_holdout.py --out runs/scaling_wsd_cpu_holdout
           gpt2-jax sweep collect runs/scaling_wsd_cpu_holdout --out experiments/benchmarks/scaling_wsd_cpu/holdout.csv
Hardware:  any CPU; ~3.4e12 FLOPs (a few minutes on an idle 2-core CPU).
Expected:  its eval bits per byte within 2% of the prediction written down (and committed) before it
           was trained: experiments/benchmarks/scaling_wsd_cpu/prediction.json.

Same recipe as the fitted points of experiments/scaling_wsd_cpu.py: 2 layers, head size 16, data,
vocabulary, batch, warmup, WSD with a 20% 1-sqrt cooldown, and the study's lr rule of width
(study.lr(176)). A WSD run of 625 steps is the computation of a cooldown branch at step 500 of a
long run, so it is comparable to the fitted rows at that token count.

References:
  experiments/scaling_wsd_cpu.py (the study and its design).
"""

import dataclasses
import pathlib

from gpt2_jax.config import TrainConfig, load_module
from gpt2_jax.scaling.sweep import Point, Sweep, cooldown_branch_steps, shape_name

study = load_module(pathlib.Path(__file__).with_name("scaling_wsd_cpu.py"))

STEPS = cooldown_branch_steps(500, study.COOLDOWN)


def get_sweep() -> Sweep:
    m = study.model(study.HOLDOUT_WIDTH)
    return Sweep(base=study.base(), points=(Point(f"{shape_name(m)}-wsd{STEPS}", m, STEPS, lr=study.lr(study.HOLDOUT_WIDTH)),))


def get_config() -> TrainConfig:
    base = study.base()
    return dataclasses.replace(base, model=study.model(study.HOLDOUT_WIDTH), steps=STEPS,
                               optim=dataclasses.replace(base.optim, lr=study.lr(study.HOLDOUT_WIDTH)))
