"""Scaling study on a synthetic corpus with a known entropy rate: does the fitted E find it?

Command:   gpt2-jax data synthetic --out runs/synthetic_markov --bytes 2200000 --alphabet 16 --order 3 \
               --support 4 --seed 0
           gpt2-jax tokenizer train --input runs/synthetic_markov/corpus.txt --vocab-size 257 \
               --out runs/synthetic_markov/vocab
           gpt2-jax data prepare --input runs/synthetic_markov/corpus.txt --vocab runs/synthetic_markov/vocab \
               --out runs/synthetic_markov/shards --split tail --val-fraction 0.0909 --min-words 0 --no-dedup \
               --no-wikipedia-filter
           gpt2-jax sweep run experiments/scaling_synthetic_cpu.py --out runs/scaling_synthetic_cpu
           gpt2-jax sweep collect runs/scaling_synthetic_cpu --out runs/scaling_synthetic_cpu/results.csv
           gpt2-jax scaling fit runs/scaling_synthetic_cpu/results.csv --law chinchilla --fit-on 'final==1' \
               --loss-column eval_bits_per_byte --bootstrap 200 --seed 0
Hardware:  any CPU; designed for <= 12 minutes on a shared 2-core CPU (`--dry-run` estimates it).
Expected:  eval bits per byte fall with size and tokens and bend toward the source's floor; the
           Chinchilla fit's E interval is finite, away from 0, and near the true floor
           (experiments/benchmarks/RESULTS.md, "Scaling laws on a synthetic source").

Design (why each choice). The real study (scaling_wsd_cpu.py) fits E -> 0: tiny Shakespeare over
that range is a pure power law, so E is not identified. Here the corpus is a random order-3
Markov chain over 16 letters, 4 possible next letters per context, concentration 1
(gpt2_jax/scaling/synthetic.py; `source.json` holds its numbers): entropy rate H = 0.915 bits per
byte, and 0.982 bits per byte is the floor for windows of 64 targets (the first two targets of a
window are predicted from 1 and 2 letters), the value a fitted E should find (the true chain
scores 0.989 on the 256 fixed eval windows themselves). The hierarchical prior gives the
entropy given 0, 1, 2, 3 previous letters as 3.99, 3.51, 2.62, 0.915 bits: each order of the
3,477 recurrent contexts' table is worth learning, the last one most. A calibration run (L2-d80,
600 steps) fell from 4.0 to 1.83 bits per byte and was still falling; L1-d32 reached 3.27: the
table is too much for the smallest models and within reach of the largest, so the curves should
bend toward the floor in both N and D. Bytes vocabulary (257 ids; 1 byte per token, so
eval_bits_per_byte = bits per symbol). 2M training tokens, so no point repeats data (the longest
run reads 1.64M). Same recipe as the real study: batch 16 x 64, lr 3e-3, warmup 20, WSD with a
1-sqrt cooldown over the last 20% to 10% of lr; one 1600-step run per size and cooldown branches
from steps 200, 400, 800 (250, 500, 1000 steps in all; Hagele et al. 2024). Sizes 13k-336k
non-embedding parameters. Eval: 16 fixed validation batches (16k tokens) every 200 steps.

References:
  Cover & Thomas 2006, "Elements of Information Theory", section 4.2 (entropy rate of a Markov chain).
  Hoffmann et al. 2022 (the parametric fit L = E + A / N^alpha + B / D^beta).
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations".
"""

import dataclasses

from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.scaling.sweep import Point, Sweep, shape_name, wsd_branches

DATA = "runs/synthetic_markov/shards"  # made by the commands above
VOCAB = 257  # bytes + <|endoftext|>
SHAPES = ((1, 32), (2, 48), (2, 64), (2, 80), (3, 96))  # (layers, width); head size 16
LONG_STEPS = 1600
BRANCH_AT = (200, 400, 800)
COOLDOWN = 0.2


def base() -> TrainConfig:
    model = dataclasses.replace(preset("tiny"), n_vocab=VOCAB, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    optim = OptimConfig(lr=3e-3, warmup_steps=20, min_lr_ratio=0.1, schedule="wsd", cooldown_fraction=COOLDOWN,
                        cooldown_shape="1-sqrt")
    return TrainConfig(workdir="runs/scaling_synthetic_cpu", model=model, data=DataConfig(path=DATA, seq_len=64),
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
