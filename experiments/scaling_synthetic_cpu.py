"""Scaling study on a synthetic corpus with a known entropy rate: does the fitted E find it?

Command:   gpt2-jax data synthetic --out runs/synthetic_markov_a12 --bytes 2200000 --alphabet 12 --order 3 \
               --support 4 --seed 0
           gpt2-jax tokenizer train --input runs/synthetic_markov_a12/corpus.txt --vocab-size 257 \
               --out runs/synthetic_markov_a12/vocab
           gpt2-jax data prepare --input runs/synthetic_markov_a12/corpus.txt --vocab runs/synthetic_markov_a12/vocab \
               --out runs/synthetic_markov_a12/shards --split tail --val-fraction 0.0909 --min-words 0 --no-dedup \
               --no-wikipedia-filter
           gpt2-jax sweep run experiments/scaling_synthetic_cpu.py --out runs/scaling_synthetic_cpu_a12
           gpt2-jax sweep collect runs/scaling_synthetic_cpu_a12 --out results.csv --curves
           gpt2-jax scaling fit results.csv --law chinchilla --fit-on 'final==1' \
               --loss-column eval_bits_per_byte --bootstrap 200 --seed 0
Hardware:  any CPU; designed for <= 12 minutes on a shared 2-core CPU (`--dry-run`: 17.5 minutes at
           its assumed 1e10 FLOP/s; measured 7.8 minutes at load 1.8-4.3).
Expected:  eval bits per byte fall with size and tokens and bend toward the source's floor
           (0.916 bits per byte); whether the Chinchilla fit's E finds that floor is the question
           (experiments/benchmarks/RESULTS.md, "Scaling laws on a synthetic source with a known
           entropy rate": it does not pin it down).

Design (why each choice). The real study (scaling_wsd_cpu.py) fits E -> 0 on tiny Shakespeare,
where E has no known value. Here the corpus is a random order-3 Markov chain over 12 letters, 4
possible next letters per context, concentration 1 (gpt2_jax/scaling/synthetic.py; `source.json`
holds its numbers): entropy rate H = 0.865 bits per byte; a model that sees windows of 64
targets predicts the first two from 1 and 2 letters, so its floor is 0.916 bits per byte (the true
chain scores 0.9175 on the 256 fixed eval windows themselves): the value a fitted E should find.
The hierarchical prior makes every order worth learning: the entropy given 0, 1, 2, 3 previous
letters is 3.54, 2.94, 2.07, 0.865 bits over 1,448 recurrent contexts. Calibration (L2-d80, 1000
steps): 1.083 bits per byte, so the largest points get near the floor. A first run of this file
with --alphabet 16 (4,096 contexts, floor 0.982; commit 2d66a60, results in
experiments/benchmarks/scaling_synthetic_cpu/a16) stayed >= 0.22 bits above its floor and had
non-monotone points: the learning curves had not bent yet.
Bytes vocabulary (257 ids; 1 byte per token, so eval_bits_per_byte = bits per symbol). 2M
training tokens, so no point repeats data (the longest run reads 1.64M). Same recipe as the real
study: batch 16 x 64, lr 3e-3, warmup 20, WSD with a 1-sqrt cooldown over the last 20% to 10% of
lr; one 1600-step run per size and cooldown branches from steps 200, 400, 800 (250, 500, 1000
steps in all; Hagele et al. 2024). Sizes 13k-336k non-embedding parameters. Eval: 16 fixed
validation batches (16k tokens) every 200 steps.

References:
  Cover & Thomas 2006, "Elements of Information Theory", section 4.2 (entropy rate of a Markov chain).
  Hoffmann et al. 2022 (the parametric fit L = E + A / N^alpha + B / D^beta).
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations".
"""

import dataclasses

from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.scaling.sweep import Point, Sweep, shape_name, wsd_branches

DATA = "runs/synthetic_markov_a12/shards"  # made by the commands above
VOCAB = 257  # bytes + <|endoftext|>
SHAPES = ((1, 32), (2, 48), (2, 64), (2, 80), (3, 96))  # (layers, width); head size 16
LONG_STEPS = 1600
BRANCH_AT = (200, 400, 800)
COOLDOWN = 0.2


def base() -> TrainConfig:
    model = dataclasses.replace(preset("tiny"), n_vocab=VOCAB, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    optim = OptimConfig(lr=3e-3, warmup_steps=20, min_lr_ratio=0.1, schedule="wsd", cooldown_fraction=COOLDOWN,
                        cooldown_shape="1-sqrt")
    return TrainConfig(workdir="runs/scaling_synthetic_cpu_a12", model=model, data=DataConfig(path=DATA, seq_len=64),
                       optim=optim, steps=LONG_STEPS, batch_size=16, log_every=25, eval_every=200, eval_batches=16,
                       ckpt_every=0, keep_checkpoints=1, sample_prompt="")


def model(shape: tuple[int, int]):
    layers, width = shape
    return dataclasses.replace(base().model, n_layer=layers, n_embd=width, n_head=width // 16)


def get_sweep() -> Sweep:
    points = []
    for shape in SHAPES:
        m = model(shape)
        long = Point(f"{shape_name(m)}-wsd{LONG_STEPS}", m, LONG_STEPS)
        points += [long, *wsd_branches(long, BRANCH_AT, COOLDOWN)]
    return Sweep(base=base(), points=tuple(points))


def get_config() -> TrainConfig:
    """The largest size's long run, for `gpt2-jax train`."""
    return dataclasses.replace(base(), model=model(SHAPES[-1]))
