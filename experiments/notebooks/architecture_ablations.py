# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # GPT-2's architecture changes, ablated at tiny scale
#
# Section 2.3 of the GPT-2 paper lists what changed from GPT-1: LayerNorm moved to the input of
# each sub-block ("pre-LN"), a final LayerNorm after the last block, and the residual
# projections' weights scaled at initialization by 1/sqrt(N). Each is a switch in
# `ModelConfig`; this notebook trains each variant with several seeds on the bundled tiny
# Shakespeare and compares held-out bits per byte, with the spread over seeds.
#
# `GPT2_JAX_NOTEBOOK_SMOKE=1` shrinks everything to a few steps (CI executes every notebook so).

# %% tags=["parameters"]
import os

SMOKE = os.environ.get("GPT2_JAX_NOTEBOOK_SMOKE", "0") == "1"
ROOT = "runs/notebooks/architecture"
SEEDS = (0,) if SMOKE else (0, 1, 2)
STEPS = 4 if SMOKE else 300
FIGURES = os.environ.get("GPT2_JAX_NOTEBOOK_FIGURES", "")  # a directory to save the plots as PNG, if set

# %%
from gpt2_jax import notebook

base = {"model": "tiny", "model.n_vocab": 1024, "steps": STEPS, "batch_size": 16, "log_every": 10,
        "eval_every": 50, "eval_batches": 8, "ckpt_every": 0, "optim.lr": 1e-3, "optim.warmup_steps": 30}
if SMOKE:
    base |= {"batch_size": 8, "data.seq_len": 32, "log_every": 2, "eval_every": 2, "eval_batches": 1,
             "optim.warmup_steps": 1}
grid = {
    "GPT-2 (pre-LN, final LN, scaled init)": {},
    "post-LN, no final LN (GPT-1 blocks)": {"model.ln_placement": "post", "model.final_ln": False},
    "pre-LN, no final LN": {"model.final_ln": False},
    "no residual init scaling": {"model.residual_scaling": False},
}
if SMOKE:  # two variants suffice to exercise every cell (each run costs a compile)
    grid = dict(list(grid.items())[:2])
all_runs = notebook.runs(grid, seeds=SEEDS, base=base, root=ROOT)

# %%
fig = notebook.compare(all_runs, metric="eval_bits_per_byte",
                       title="held-out bits per byte (mean over seeds, band = min..max)")
if FIGURES:
    os.makedirs(FIGURES, exist_ok=True)
    fig.savefig(f"{FIGURES}/architecture_ablations_eval.png", dpi=110)
fig

# %%
fig = notebook.compare(all_runs, metric="bits_per_byte", title="training bits per byte")
if FIGURES:
    fig.savefig(f"{FIGURES}/architecture_ablations_train.png", dpi=110)
fig

# %% [markdown]
# Final held-out bits per byte per variant: mean, sample standard deviation and range over
# seeds. A difference smaller than the spread is no measurable difference at this scale.

# %%
table = notebook.summary(all_runs, metric="eval_bits_per_byte")
table["mean - GPT-2"] = table["mean"] - table["mean"].iloc[0]
table.round(4)
