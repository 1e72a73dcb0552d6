"""Scaling study with WSD cooldown branches on a 2-core CPU: 4 sizes x 4 budgets, cosine controls.

Command:   gpt2-jax sweep run experiments/scaling_wsd_cpu.py --out runs/scaling_wsd_cpu
           gpt2-jax sweep collect runs/scaling_wsd_cpu --out runs/scaling_wsd_cpu/results.csv --curves
           gpt2-jax scaling predict runs/scaling_wsd_cpu/results.csv --law chinchilla --fit-on 'final==1' \
               --loss-column eval_bits_per_byte --at params=N_HOLDOUT,tokens=D_HOLDOUT --json
           then experiments/scaling_wsd_cpu_holdout.py (the 5x larger model, trained after the prediction).
Hardware:  any CPU; designed for <= 45 minutes on an idle 2-core CPU (`--dry-run` estimates it).
Expected:  eval bits per byte fall with size and with tokens; each WSD cooldown branch within ~1% of
           the separately trained cosine run at the same (N, D); the Chinchilla fit on these sizes
           predicts the holdout model within 2% (experiments/benchmarks/RESULTS.md, "Scaling study
           with WSD cooldown branches").

Design (why each choice). Sizes L1-d32, L2-d48, L2-d64, L2-d80 (13k-156k non-embedding
parameters) with a 512-token BBPE learnt on tiny Shakespeare, so the embeddings (512 x d) do not
dominate N. One WSD long run per size (1250 steps of 16 x 64 tokens = 1.28M tokens, constant lr
3e-3 after 20 warmup steps, 1-sqrt cooldown over the last 20%), and cooldown branches from its
checkpoints at steps 125, 250 and 500 (Hagele et al. 2024: one long run gives every shorter
length for the price of its cooldowns). 1.28M tokens are ~2.5 epochs of the 519k-token training
split: the repeat count is recorded (tokens / train tokens, RESULTS.md); Muennighoff et al. 2023
find up to ~4 epochs worth nearly as much as fresh data, so the curves stay in the regime where
more tokens help. Cosine controls (to 10% of lr, like the WSD cooldown's end) at 3 cells: L2-d80
at the 312- and 625-step budgets, L2-d48 at 625 steps. The eval metric is bits per byte over 16
fixed validation batches (16k tokens), evaluated every 125 steps for the L(C) envelope.

References:
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations".
  Muennighoff et al. 2023, "Scaling Data-Constrained Language Models" (repeated epochs).
  Hoffmann et al. 2022 (the parametric fit used for the prediction).
"""

import dataclasses

from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.scaling.sweep import Point, Sweep, shape_name, wsd_branches

VOCAB = 512
SHAPES = ((1, 32), (2, 48), (2, 64), (2, 80))  # (layers, width); head size 16
HOLDOUT_SHAPE = (4, 128)  # ~5x the largest fitted N (experiments/scaling_wsd_cpu_holdout.py)
LONG_STEPS = 1250
BRANCH_AT = (125, 250, 500)
COOLDOWN = 0.2
COSINE_CELLS = (((2, 80), 500), ((2, 80), 250), ((2, 48), 500))  # (shape, branch step whose length to match)


def base() -> TrainConfig:
    model = dataclasses.replace(preset("tiny"), n_vocab=VOCAB, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    optim = OptimConfig(lr=3e-3, warmup_steps=20, min_lr_ratio=0.1, schedule="wsd", cooldown_fraction=COOLDOWN,
                        cooldown_shape="1-sqrt")
    return TrainConfig(workdir="runs/scaling_wsd_cpu", model=model, data=DataConfig(seq_len=64, vocab=f"bbpe:{VOCAB}"),
                       optim=optim, steps=LONG_STEPS, batch_size=16, log_every=25, eval_every=125, eval_batches=16,
                       ckpt_every=0, keep_checkpoints=1, sample_prompt="")


def model(shape: tuple[int, int]):
    layers, width = shape
    return dataclasses.replace(base().model, n_layer=layers, n_embd=width, n_head=width // 16)


def get_sweep() -> Sweep:
    points = []
    longs = {}
    for shape in SHAPES:
        m = model(shape)
        long = Point(f"{shape_name(m)}-wsd{LONG_STEPS}", m, LONG_STEPS)
        longs[shape] = long
        points += [long, *wsd_branches(long, BRANCH_AT, COOLDOWN)]
    by_name = {p.name: p for p in points}
    for shape, at in COSINE_CELLS:
        steps = by_name[f"{longs[shape].name}-cd{at}"].steps  # the same (N, D) as that branch
        points.append(Point(f"{shape_name(model(shape))}-cos{steps}", model(shape), steps, optim={"schedule": "cosine"}))
    return Sweep(base=base(), points=tuple(points))


def get_config() -> TrainConfig:
    """The largest fitted size's long run, for `gpt2-jax train`."""
    return dataclasses.replace(base(), model=model(SHAPES[-1]))
