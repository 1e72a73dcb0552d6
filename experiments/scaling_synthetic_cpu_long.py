"""The known-entropy scaling study run 2.5x longer: does E get pinned once the curves bend?

Command:   gpt2-jax data synthetic --out runs/synthetic_markov_a12_long --bytes 4800000 --alphabet 12 --order 3 \
               --support 4 --seed 0
           gpt2-jax data prepare --input runs/synthetic_markov_a12_long/corpus.txt --vocab bytes \
               --out runs/synthetic_markov_a12_long/shards --split tail --val-fraction 0.0909 --min-words 0 \
               --max-chars 10000000 --no-dedup --no-wikipedia-filter
           (the run used `tokenizer train --vocab-size 257` for the vocabulary: the same files and fingerprint)
           gpt2-jax sweep run experiments/scaling_synthetic_cpu_long.py --out runs/scaling_synthetic_cpu_a12_long
           gpt2-jax sweep collect runs/scaling_synthetic_cpu_a12_long --out results.csv --curves
           gpt2-jax scaling fit results.csv --law chinchilla --fit-on 'final==1' \
               --loss-column eval_bits_per_byte --bootstrap 200 --seed 0
Hardware:  any CPU; ~25 minutes on an idle 2-core CPU (`--dry-run` for this machine's estimate).
Expected:  the largest points come within a few hundredths of a bit of the floor (0.916 bits per byte),
           and the Chinchilla fit's E interval is narrower than the short study's [0, 0.93] and covers
           the floor (experiments/benchmarks/RESULTS.md, "Scaling laws on a synthetic source with a
           known entropy rate").

Why: experiments/scaling_synthetic_cpu.py (1,600-step long runs, 1.64M tokens) left its largest model
0.08 bits above the source's floor, and its fitted E covered the floor only with an interval reaching
0: points far from the floor do not constrain it. This study changes one thing, the length: the
same source (order 3, 12 letters, support 4, seed 0; a longer sample of the same chain), sizes,
batch, lr and schedule, with 4,000-step long runs (4.1M tokens, still under one epoch of the 4.36M
training tokens) and cooldown branches at 400, 800 and 1,600 steps (500, 1,000 and 2,000 steps in
all), so each size has four lengths a factor of 2 apart.

References:
  experiments/scaling_synthetic_cpu.py (the source, the recipe and its reasons).
  Hoffmann et al. 2022 (the parametric fit L = E + A / N^alpha + B / D^beta).
"""

import dataclasses
import pathlib

from gpt2_jax.config import DataConfig, TrainConfig, load_module
from gpt2_jax.scaling.sweep import Point, Sweep, shape_name, wsd_branches

short = load_module(pathlib.Path(__file__).with_name("scaling_synthetic_cpu.py"))

DATA = "runs/synthetic_markov_a12_long/shards"  # made by the commands above
LONG_STEPS = 4000
BRANCH_AT = (400, 800, 1600)


def base() -> TrainConfig:
    b = short.base()
    return dataclasses.replace(b, workdir="runs/scaling_synthetic_cpu_a12_long", steps=LONG_STEPS,
                               data=dataclasses.replace(b.data, path=DATA))


def get_sweep() -> Sweep:
    points = []
    for shape in short.SHAPES:
        m = short.model(shape)
        long = Point(f"{shape_name(m)}-wsd{LONG_STEPS}", m, LONG_STEPS)
        points += [long, *wsd_branches(long, BRANCH_AT, short.COOLDOWN)]
    return Sweep(base=base(), points=tuple(points))


def get_config() -> TrainConfig:
    """The largest size's long run, for `gpt2-jax train`."""
    return dataclasses.replace(base(), model=short.model(short.SHAPES[-1]))
