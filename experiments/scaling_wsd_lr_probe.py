"""Learning-rate probe for the WSD study: cosine and WSD at the same (N, D), three peak LRs each.

Command:   gpt2-jax sweep run experiments/scaling_wsd_lr_probe.py --out runs/scaling_wsd_lr_probe
           gpt2-jax sweep collect runs/scaling_wsd_lr_probe --out runs/scaling_wsd_lr_probe/results.csv
Hardware:  any CPU; 28 runs of 312 steps (L2-d80, and L2-d32/d48 for the lr rule): ~2.5 min for the first
           8 on an idle 2-core CPU, about 10 min for all 28 under load.
Expected:  with 20 warmup steps WSD beats cosine by 1-5% at every lr; with 100 both are best near 6e-3 at
           width 80 and within ~0.5% (experiments/benchmarks/RESULTS.md, "Scaling study with WSD cooldown branches").
Why:       the first WSD study (one lr, 3e-3) found its cooldown branches 2.3-2.9% better than cosine
           runs at the same (N, D). Hagele et al. 2024 compare the schedules each at its own best lr;
           this probe asks whether 3e-3 was below the best lr of either schedule, which would favour
           WSD (its lr stays at the peak for 80% of the run, cosine's mean is about half the peak).
"""

import dataclasses
import pathlib

from gpt2_jax.config import TrainConfig, load_module

from gpt2_jax.scaling.sweep import Point, Sweep, shape_name

study = load_module(pathlib.Path(__file__).with_name("scaling_wsd_cpu.py"))

WIDTH = 80
STEPS = 312
LRS = (7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2)
WARMUPS = (20, 100)  # the study's warmup, and a longer one: does a higher peak lr become usable?


def base() -> TrainConfig:
    """The study's base as it was when the probe ran: 16 eval batches every 125 steps, warmup 20."""
    b = study.base()
    return dataclasses.replace(b, eval_batches=16, eval_every=125, optim=dataclasses.replace(b.optim, warmup_steps=20))


def get_sweep() -> Sweep:
    m = study.model(WIDTH)
    points = [Point(f"{shape_name(m)}-{schedule}{STEPS}-lr{lr:g}" + (f"-wu{warmup}" if warmup != 20 else ""), m, STEPS,
                    lr=lr, optim={"schedule": schedule, "warmup_steps": warmup})
              for warmup in WARMUPS for lr in LRS for schedule in ("cosine", "wsd")
              if warmup == 20 or lr >= 3e-3]
    return Sweep(base=base(), points=tuple(points) + get_sweep_small().points)


# Second part: the cosine optimum at two smaller widths (warmup 100), for the lr-vs-width rule the
# study uses. Only sizes below the holdout are probed: the holdout's lr comes from the rule alone.
SMALL_WIDTHS = (32, 48)
SMALL_LRS = (3e-3, 6e-3, 1.2e-2, 2.4e-2)


def get_sweep_small() -> Sweep:
    points = []
    for width in SMALL_WIDTHS:
        m = study.model(width)
        points += [Point(f"{shape_name(m)}-cosine{STEPS}-lr{lr:g}-wu100", m, STEPS, lr=lr,
                         optim={"schedule": "cosine", "warmup_steps": 100}) for lr in SMALL_LRS]
    return Sweep(base=base(), points=tuple(points))


def get_config() -> TrainConfig:
    """The probe's first point (cosine, lr 3e-3, warmup 20), for `gpt2-jax train`."""
    return dataclasses.replace(base(), model=study.model(WIDTH), steps=STEPS,
                               optim=dataclasses.replace(base().optim, lr=LRS[2], schedule="cosine", warmup_steps=20))
