"""Scaling study with WSD cooldown branches on a 2-core CPU: 4 widths x 4 budgets, cosine controls.

Command:   gpt2-jax sweep run experiments/scaling_wsd_cpu.py --out runs/scaling_wsd_cpu
           gpt2-jax sweep collect runs/scaling_wsd_cpu --out experiments/benchmarks/scaling_wsd_cpu/results.csv --curves
           python experiments/benchmarks/scaling_wsd_cpu_report.py experiments/benchmarks/scaling_wsd_cpu/results.csv
           gpt2-jax scaling predict experiments/benchmarks/scaling_wsd_cpu/results.csv --law chinchilla \
               --fit-on 'final==1 and schedule=="wsd"' --loss-column eval_bits_per_byte \
               --at params=N_HOLDOUT,tokens=D_HOLDOUT --json
           then experiments/scaling_wsd_cpu_holdout.py (the 4.8x larger model, trained after the prediction).
Hardware:  any CPU; designed for <= 45 minutes on an idle 2-core CPU (`--dry-run` estimates it).
Expected:  eval bits per byte fall with width and with tokens; the WSD cooldown branches 0.5-1.7%
           better than separately trained cosine runs at the same (N, D) (the whole grid:
           experiments/scaling_wsd_cosine_controls.py); the Chinchilla fit on these sizes predicts
           the holdout model within 2% (experiments/benchmarks/RESULTS.md, "Scaling study with WSD
           cooldown branches").

Design (why each choice).
- One family: 2 layers, head size 16, widths 32, 48, 64, 80 (25k-156k non-embedding parameters),
  and the holdout in the same family (width 176, 748k: 4.8x the largest fitted N). The first
  version of this study mixed 1- and 2-layer models and held out a 4-layer one; its prediction
  missed by 3% (RESULTS.md), and a change of depth is a change of recipe.
- A 512-token BBPE learnt on tiny Shakespeare, so the embeddings (512 x d) do not dominate N.
- Learning rate by a rule of width, lr(d) = LR_AT_80 * (80 / d) ** LR_WIDTH_EXPONENT, fitted to the
  best cosine lr of widths 32, 48 and 80 in experiments/scaling_wsd_lr_probe.py (standard
  parametrization: the best Adam lr falls with width, Yang et al. 2022). The holdout's lr comes
  from the rule alone; no run at its width was made before its prediction.
- 100 warmup steps: with 20 (the first version) the probe's cosine runs lost 1-3% to WSD at every
  lr, because a short warmup hurts the schedule whose lr is high early; with 100 the two schedules
  agree within 0.5% at the best lr (RESULTS.md).
- One WSD long run per width (1500 steps of 16 x 64 tokens = 1.54M tokens, constant lr after the
  warmup, 1-sqrt cooldown over the last 20% to 10% of lr), and cooldown branches from its
  checkpoints at steps 250, 500 and 750 (312, 625 and 937 steps in all; Hagele et al. 2024: one
  long run gives every shorter length for the price of its cooldowns). 1.54M tokens are ~3 epochs
  of the 519k-token training split: the repeat count is recorded (tokens / train tokens, RESULTS.md);
  Muennighoff et al. 2023 find up to ~4 epochs worth nearly as much as fresh data.
- Cosine controls (to 10% of lr, like the WSD cooldown's end) at four cells: width 80 at 312, 625
  and 937 steps, width 48 at 625 steps.
- The metric is bits per byte over 32 fixed validation batches (32k of the 58k validation tokens),
  evaluated every 250 steps for the L(C) envelope.

References:
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations".
  Muennighoff et al. 2023, "Scaling Data-Constrained Language Models" (repeated epochs).
  Hoffmann et al. 2022 (the parametric fit used for the prediction).
  Yang et al. 2022, "Tensor Programs V" (the best lr of a standard-parametrization model falls with width).
"""

import dataclasses

from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.scaling.sweep import Point, Sweep, shape_name, wsd_branches

VOCAB = 512
LAYERS = 2
WIDTHS = (32, 48, 64, 80)  # head size 16
HOLDOUT_WIDTH = 176  # 748,352 non-embedding parameters, 4.8x width 80's 155,840
LR_AT_80 = 6e-3  # the probe's best cosine lr at width 80 (grid 3e-3..2.4e-2; 6.3e-3 refined)
LR_WIDTH_EXPONENT = 1.0  # lr ~ 1/width: the probe's interior optima give 0.7 (widths 48, 80), width 32's lies at or past the grid's top (>= 1)
WARMUP = 100
LONG_STEPS = 1500
BRANCH_AT = (250, 500, 750)
COOLDOWN = 0.2
COSINE_CELLS = ((80, 250), (80, 500), (80, 750), (48, 500))  # (width, branch step whose length to match)


def lr(width: int) -> float:
    """The study's learning rate for a model of this width (see the module docstring)."""
    return round(LR_AT_80 * (80 / width) ** LR_WIDTH_EXPONENT, 6)


def base() -> TrainConfig:
    model = dataclasses.replace(preset("tiny"), n_vocab=VOCAB, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    optim = OptimConfig(lr=LR_AT_80, warmup_steps=WARMUP, min_lr_ratio=0.1, schedule="wsd", cooldown_fraction=COOLDOWN,
                        cooldown_shape="1-sqrt")
    return TrainConfig(workdir="runs/scaling_wsd_cpu", model=model, data=DataConfig(seq_len=64, vocab=f"bbpe:{VOCAB}"),
                       optim=optim, steps=LONG_STEPS, batch_size=16, log_every=25, eval_every=250, eval_batches=32,
                       ckpt_every=0, keep_checkpoints=1, sample_prompt="")


def model(width: int):
    return dataclasses.replace(base().model, n_layer=LAYERS, n_embd=width, n_head=width // 16)


def get_sweep() -> Sweep:
    points = []
    longs = {}
    for width in WIDTHS:
        m = model(width)
        long = Point(f"{shape_name(m)}-wsd{LONG_STEPS}", m, LONG_STEPS, lr=lr(width))
        longs[width] = long
        points += [long, *wsd_branches(long, BRANCH_AT, COOLDOWN)]
    by_name = {p.name: p for p in points}
    for width, at in COSINE_CELLS:
        steps = by_name[f"{longs[width].name}-cd{at}"].steps  # the same (N, D) as that branch
        points.append(Point(f"{shape_name(model(width))}-cos{steps}", model(width), steps, lr=lr(width),
                            optim={"schedule": "cosine"}))
    return Sweep(base=base(), points=tuple(points))


def get_config() -> TrainConfig:
    """The largest fitted width's long run, for `gpt2-jax train`."""
    w = WIDTHS[-1]
    return dataclasses.replace(base(), model=model(w), optim=dataclasses.replace(base().optim, lr=lr(w)))
