"""Run-to-run noise of the WSD-vs-cosine comparison: two more seeds of widths 48 and 80.

Command:   gpt2-jax sweep run experiments/scaling_wsd_cpu_seeds.py --out runs/scaling_wsd_cpu_seeds
           gpt2-jax sweep collect runs/scaling_wsd_cpu_seeds --out experiments/benchmarks/scaling_wsd_cpu/seeds.csv
           python experiments/benchmarks/scaling_wsd_cpu_report.py experiments/benchmarks/scaling_wsd_cpu/results.csv \
               --cosine experiments/benchmarks/scaling_wsd_cpu/cosine_controls.csv \
               --seeds experiments/benchmarks/scaling_wsd_cpu/seeds.csv
Hardware:  any CPU; 28 runs (4 WSD long runs of 1500 steps, their 12 cooldowns, 12 cosine runs), ~10 min on
           an idle 2-core CPU.
Expected:  over seeds 0-2 the WSD branch stays ahead of the cosine run at every cell, by more than the
           seed-to-seed spread of either (experiments/benchmarks/RESULTS.md, "Scaling study with WSD
           cooldown branches").
Why:       the study and its cosine controls ran one seed (0); the grid's rows are not monotone in the
           number of epochs (width 32: -1.62%, -1.25%, -0.48%), which may be noise. Seeds 1 and 2 of
           the two widths with cosine runs in the study (48, 80) repeat every run the comparison needs:
           the long run, its three cooldown branches, and the cosine run at each branch's (N, D), all at
           the study's lr. The seed sets the initialization, the data order and dropout (off here).
"""

import dataclasses
import pathlib

from gpt2_jax.config import TrainConfig, load_module
from gpt2_jax.scaling.sweep import Point, Sweep, cooldown_branch_steps, shape_name, wsd_branches

study = load_module(pathlib.Path(__file__).with_name("scaling_wsd_cpu.py"))

SEEDS = (1, 2)  # seed 0 is the study itself (results.csv) and its controls (cosine_controls.csv)
WIDTHS = (48, 80)


def get_sweep() -> Sweep:
    points = []
    for seed in SEEDS:
        for width in WIDTHS:
            m = study.model(width)
            long = Point(f"{shape_name(m)}-wsd{study.LONG_STEPS}-s{seed}", m, study.LONG_STEPS, lr=study.lr(width),
                         seed=seed)
            points += [long, *wsd_branches(long, study.BRANCH_AT, study.COOLDOWN)]
            for at in study.BRANCH_AT:
                steps = cooldown_branch_steps(at, study.COOLDOWN)
                points.append(Point(f"{shape_name(m)}-cos{steps}-s{seed}", m, steps, lr=study.lr(width),
                                    optim={"schedule": "cosine"}, seed=seed))
    return Sweep(base=study.base(), points=tuple(points))


def get_config() -> TrainConfig:
    """Width 80's long run with seed 1, for `gpt2-jax train`."""
    base = study.base()
    return dataclasses.replace(base, model=study.model(80), seed=SEEDS[0],
                               optim=dataclasses.replace(base.optim, lr=study.lr(80)))
