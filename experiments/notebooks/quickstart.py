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
# # Quickstart: train the mini GPT-2, plot the loss, sample, export
#
# Everything here goes through `gpt2_jax.notebook`, a thin face over the same `train.train`
# that `gpt2-jax train` runs. The run lives in `WORKDIR`: running this notebook again loads the
# finished run instead of training it again, and interrupting the training cell stops at the
# next step with a checkpoint (run the cell again to resume).
#
# `GPT2_JAX_NOTEBOOK_SMOKE=1` shrinks the run to a few steps (CI executes every notebook so).

# %% tags=["parameters"]
import os

SMOKE = os.environ.get("GPT2_JAX_NOTEBOOK_SMOKE", "0") == "1"
WORKDIR = "runs/notebooks/quickstart"
STEPS = 6 if SMOKE else 300

# %%
import pathlib

from gpt2_jax import notebook

overrides = {"workdir": WORKDIR, "model": "mini", "model.n_vocab": 4096, "steps": STEPS,
             "log_every": 2 if SMOKE else 10, "eval_every": 3 if SMOKE else 50, "eval_batches": 2 if SMOKE else 8,
             "ckpt_every": 0}
if SMOKE:
    overrides |= {"batch_size": 8, "data.seq_len": 32, "optim.warmup_steps": 2}
run = notebook.run(overrides)
run

# %% [markdown]
# The metrics are a pandas DataFrame, one row per logged step. `bits_per_byte` is the loss
# converted with the data's bytes per token, so it compares across vocabularies.

# %%
run.metrics.tail()

# %%
ax = run.metrics.plot(x="step", y="loss", label="train", figsize=(7, 4))
run.metrics.dropna(subset=["eval_loss"]).plot(x="step", y="eval_loss", label="eval", ax=ax, marker="o")
ax.set_ylabel("loss (nats/token)");

# %% [markdown]
# ## Sample
# The bundled corpus was tokenized with a 4096-token byte-level BPE learnt on its training part;
# it lives in `WORKDIR/vocab`.

# %%
from gpt2_jax.sample import generate
from gpt2_jax.tokenizer import load_tokenizer

tok = load_tokenizer(str(pathlib.Path(WORKDIR) / "vocab"))
ids = generate(run.params, run.config.model, tok.encode("ROMEO:"), max_new_tokens=48, temperature=0.8, top_k=200)
print(tok.decode(ids[0]))

# %% [markdown]
# ## Export
# To Hugging Face's `GPT2LMHeadModel` layout (safetensors + config.json); the same as
# `gpt2-jax export WORKDIR/checkpoints --format hf --out DIR`.

# %%
import shutil

from gpt2_jax.export import save_hf_dir

hf_dir = pathlib.Path(WORKDIR) / "hf"
shutil.rmtree(hf_dir, ignore_errors=True)
save_hf_dir(hf_dir, run.config.model, run.params)
sorted(p.name for p in hf_dir.iterdir())
