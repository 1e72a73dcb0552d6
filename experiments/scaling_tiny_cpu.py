"""Scaling study on a 2-core CPU: 5 tiny GPT-2 sizes x 4 token budgets on bundled tiny Shakespeare.

Command:   gpt2-jax sweep run experiments/scaling_tiny_cpu.py --out runs/scaling_tiny_cpu
           gpt2-jax sweep collect runs/scaling_tiny_cpu --out runs/scaling_tiny_cpu/results.csv
           gpt2-jax scaling fit runs/scaling_tiny_cpu/results.csv --law chinchilla --loss-column eval_loss --bootstrap 200
Hardware:  any CPU; designed for <= 30 minutes on an idle 2-core CPU (`--dry-run` estimates it).
Expected:  eval loss falls with both size and tokens; results, fitted laws and plots in
           experiments/benchmarks/RESULTS.md ("Scaling study, tiny GPT-2s on a 2-core CPU").

Sizes come from the shape rule (scaling/sweep.py: shape_for_params, d_model/n_layer ~ 32, head
size 16) at target non-embedding sizes 10k-400k; each is trained for 50, 100, 200 and 400 steps of
16 x 64 tokens (51k to 410k tokens), with its own cosine schedule, no dropout, a 512-token BBPE
learnt on the corpus, and evaluated once at the end on 8 validation batches. `get_config()` is
the largest point, for `gpt2-jax train`.
"""

import dataclasses

from gpt2_jax.config import DataConfig, OptimConfig, TrainConfig, preset
from gpt2_jax.scaling.sweep import Sweep, grid, shape_for_params

TARGET_PARAMS = (10e3, 25e3, 60e3, 150e3, 400e3)
STEPS = (50, 100, 200, 400)
VOCAB = 512


def _base() -> TrainConfig:
    model = dataclasses.replace(preset("tiny"), n_vocab=VOCAB, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    return TrainConfig(workdir="runs/scaling_tiny_cpu", model=model, data=DataConfig(seq_len=64, vocab=f"bbpe:{VOCAB}"),
                       optim=OptimConfig(lr=3e-3, warmup_steps=10), steps=max(STEPS), batch_size=16, log_every=10,
                       eval_every=1_000_000, eval_batches=8, ckpt_every=100, keep_checkpoints=1, sample_prompt="")


def _shapes():
    base = _base().model
    return [shape_for_params(n, aspect_ratio=32, head_dim=16, base=base) for n in TARGET_PARAMS]


def get_sweep() -> Sweep:
    base = _base()
    return Sweep(base=base, points=tuple(grid(base, _shapes(), STEPS)))


def get_config() -> TrainConfig:
    return dataclasses.replace(_base(), model=dataclasses.replace(_base().model, **{
        k: getattr(_shapes()[-1], k) for k in ("n_layer", "n_embd", "n_head")}))
