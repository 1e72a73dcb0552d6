"""Cosine controls of the WSD study: every cell at the study's lr, and the missed cells at their own best lr.

Command:   gpt2-jax sweep run experiments/scaling_wsd_cosine_controls.py --out runs/scaling_wsd_cosine_controls
           gpt2-jax sweep collect runs/scaling_wsd_cosine_controls \
               --out experiments/benchmarks/scaling_wsd_cpu/cosine_controls.csv
           python experiments/benchmarks/scaling_wsd_cpu_report.py experiments/benchmarks/scaling_wsd_cpu/results.csv \
               --cosine experiments/benchmarks/scaling_wsd_cpu/cosine_controls.csv
Hardware:  any CPU; 20 runs of 312-937 steps, ~15 min on an idle 2-core CPU.
Expected:  WSD branches and cosine runs agree within 1% at 0.6 epochs and part apart with the
           number of epochs, WSD ahead; tuning the cosine lr closes part of the gap
           (experiments/benchmarks/RESULTS.md, "Scaling study with WSD cooldown branches").
Why:       experiments/scaling_wsd_cpu.py trains cosine controls at four cells only, at the lr of
           the study's rule (the best cosine lr at 312 steps), and its WSD branches beat three of them
           by 1.0-1.7%. Two questions: (1) is that a property of some cells or of all? This sweep
           trains the other eight cells of the 4-width x 3-length grid at the rule's lr. (2) Does the
           cosine run lose because its lr is wrong for its length? Hagele et al. 2024 compare each
           schedule at its own best lr; the three cells that missed are trained at 1/2, sqrt(2) and 2
           times the rule's lr (decaying to 10%, like the WSD cooldown), and once decaying to zero.
"""

import dataclasses
import pathlib

from gpt2_jax.config import TrainConfig, load_module
from gpt2_jax.scaling.sweep import Point, Sweep, cooldown_branch_steps, shape_name

study = load_module(pathlib.Path(__file__).with_name("scaling_wsd_cpu.py"))

MISSED = ((80, 500), (80, 750), (48, 500))  # (width, branch step): the study's cells outside 1%
LR_FACTORS = (0.5, 2 ** 0.5, 2.0)  # times study.lr(width); factor 1 is the study's own cosine run


def cosine(width: int, at: int, *, factor: float = 1.0, suffix: str = "", **optim) -> Point:
    """A cosine run as long as the study's branch at step `at` of this width's long run."""
    m = study.model(width)
    steps = cooldown_branch_steps(at, study.COOLDOWN)
    return Point(f"{shape_name(m)}-cos{steps}{suffix}", m, steps, lr=round(study.lr(width) * factor, 6),
                 optim={"schedule": "cosine", **optim})


def get_sweep() -> Sweep:
    rest_of_grid = [cosine(width, at) for width in study.WIDTHS for at in study.BRANCH_AT
                    if (width, at) not in study.COSINE_CELLS]
    tuned = []
    for width, at in MISSED:
        tuned += [cosine(width, at, factor=f, suffix=f"-lrx{f:.2f}") for f in LR_FACTORS]
        tuned.append(cosine(width, at, suffix="-to0", min_lr_ratio=0.0))
    return Sweep(base=study.base(), points=tuple(rest_of_grid + tuned))


def get_config() -> TrainConfig:
    """The first point (width 32, 312 steps, the study's lr), for `gpt2-jax train`."""
    point = get_sweep().points[0]
    base = study.base()
    return dataclasses.replace(base, model=point.model, steps=point.steps,
                               optim=dataclasses.replace(base.optim, lr=point.lr, schedule="cosine"))
