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
# # Tokenizer ablation: bytes vs byte-level BPE sizes vs sentencepiece vs GPT-2's vocabulary
#
# The same tiny model is trained on the bundled tiny Shakespeare tokenized five ways. A loss
# per token is not comparable across vocabularies (a token of a larger vocabulary covers more
# text), so everything is in bits per UTF-8 byte, and every run is given the same number of
# bytes of training text: steps = byte budget / (batch x sequence x bytes per token).
# Learnt vocabularies see only the training part of the corpus.
#
# `GPT2_JAX_NOTEBOOK_SMOKE=1` shrinks everything to a few steps (CI executes every notebook so).

# %% tags=["parameters"]
import os

SMOKE = os.environ.get("GPT2_JAX_NOTEBOOK_SMOKE", "0") == "1"
ROOT = "runs/notebooks/tokenizers"
SEEDS = (0,)  # one seed per vocabulary (CPU time); the architecture notebook shows the seed spread at this scale
BYTE_BUDGET = 20_000 if SMOKE else 1_200_000  # bytes of training text per run (~1.2 epochs of the train split)
VOCABS = {"bytes (257)": "bytes", "BBPE 512": "bbpe:512", "BBPE 2048": "bbpe:2048", "BBPE 8192": "bbpe:8192",
          "sentencepiece BPE 2048": "sp:2048", "GPT-2 (50257)": "gpt2"}
if SMOKE:
    VOCABS = {"bytes (257)": "bytes", "sentencepiece BPE 400": "sp:400"}
FIGURES = os.environ.get("GPT2_JAX_NOTEBOOK_FIGURES", "")

# %%
import json
import pathlib

from gpt2_jax import notebook
from gpt2_jax.train import resolve_data

BATCH, SEQ = (8, 32) if SMOKE else (16, 128)
N_VOCAB = {"bytes": 257, "gpt2": 50257}
base = {"model": "tiny", "batch_size": BATCH, "data.seq_len": SEQ, "ckpt_every": 0, "optim.lr": 1e-3,
        "optim.warmup_steps": 2 if SMOKE else 30, "eval_batches": 1 if SMOKE else 8}

# Tokenize once per vocabulary (the data is shared by the seeds) and read bytes per token.
plan = {}
for label, vocab in VOCABS.items():
    n_vocab = N_VOCAB.get(vocab) or int(vocab.split(":")[1])
    data_dir = pathlib.Path(ROOT) / "data" / vocab.replace(":", "")
    cfg = notebook.make_config(base, {"model.n_vocab": n_vocab, "data.vocab": vocab, "workdir": data_dir})
    manifest = json.loads((resolve_data(cfg, say=lambda _: None) / "manifest.json").read_text())
    bpt = manifest["splits"]["train"]["bytes_per_token"]
    steps = max(2, round(BYTE_BUDGET / (BATCH * SEQ * bpt)))
    every = max(1, steps // 8)
    plan[label] = {"model.n_vocab": n_vocab, "data.path": data_dir / "data", "steps": steps,
                   "log_every": every, "eval_every": every}
    print(f"{label:>24}: {bpt:.3f} bytes/token -> {steps} steps for {BYTE_BUDGET:,} bytes")

# %%
all_runs = notebook.runs(plan, seeds=SEEDS, base=base, root=ROOT)
for r in all_runs:  # bytes of training text seen, the common x axis
    bpt = json.loads((pathlib.Path(r.config.data.path) / "manifest.json").read_text())["splits"]["train"]["bytes_per_token"]
    r.metrics["bytes_seen"] = r.metrics["step"] * BATCH * SEQ * bpt

# %%
fig = notebook.compare(all_runs, metric="eval_bits_per_byte", x="bytes_seen",
                       title="held-out bits per byte at equal bytes of training text")
if FIGURES:
    os.makedirs(FIGURES, exist_ok=True)
    fig.savefig(f"{FIGURES}/tokenizer_ablation_eval.png", dpi=110)
fig

# %%
table = notebook.summary(all_runs, metric="eval_bits_per_byte")
table["steps"] = [plan[label]["steps"] for label in table.index]
table.round(4)
