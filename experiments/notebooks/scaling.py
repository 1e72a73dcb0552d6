# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scaling laws at tiny scale: a sweep, its results table, Kaplan and Chinchilla fits
#
# This notebook walks the scaling-law toolkit (`gpt2_jax/scaling/`) end to end: it defines a
# small sweep of tiny GPT-2s (a few model sizes x a few token budgets on the bundled tiny
# Shakespeare, with an explicit 512-token BBPE, as `experiments/scaling_tiny_cpu.py` does),
# trains it through the same runner as `gpt2-jax sweep run` (resumable: rerunning a cell skips
# finished points and resumes the others from their checkpoints), collects the results table
# like `gpt2-jax sweep collect`, and fits Kaplan et al.'s L(N, D) and Hoffmann et al.'s
# approach 3 with bootstrap intervals, like `gpt2-jax scaling fit`. The last part fits the
# shipped study's table without training anything.
#
# `GPT2_JAX_NOTEBOOK_SMOKE=1` shrinks everything to a few steps (CI executes every notebook so).

# %% tags=["parameters"]
import os

SMOKE = os.environ.get("GPT2_JAX_NOTEBOOK_SMOKE", "0") == "1"
ROOT = "runs/notebooks/scaling"
# Target non-embedding sizes (shape rule: d_model / n_layer ~ 32, head size 16) and steps per run.
# The fits need at least 6 runs (chinchilla has 5 parameters) over 2+ sizes and 2+ budgets.
TARGET_PARAMS = (5e3, 20e3) if SMOKE else (10e3, 25e3, 60e3, 150e3)
STEPS = (3, 6, 12) if SMOKE else (50, 100, 200)
BOOTSTRAP = 20 if SMOKE else 200  # resamples for the intervals
VOCAB = 512
FIGURES = os.environ.get("GPT2_JAX_NOTEBOOK_FIGURES", "")  # a directory to save the plots as PNG, if set

# %%
import dataclasses
import pathlib

import pandas as pd
from absl import logging as absl_logging
from IPython.display import Image, display

import gpt2_jax
from gpt2_jax import notebook
from gpt2_jax.scaling import runner
from gpt2_jax.scaling.collect import collect, write_csv
from gpt2_jax.scaling.fit import fit_law
from gpt2_jax.scaling.plots import plot_all
from gpt2_jax.scaling.sweep import Sweep, grid, shape_for_params
from gpt2_jax.scaling.table import load_table

absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax logs every checkpoint save at INFO
OUT = pathlib.Path(ROOT)
PLOTS = pathlib.Path(FIGURES) if FIGURES else OUT / "plots"

# %% [markdown]
# ## The sweep
#
# A sweep is a base `TrainConfig` (data, batch, schedule: what every point shares) plus points
# (a model shape and a number of steps). No dropout, so the runs measure fitting rather than
# regularisation; each point gets its own cosine schedule over its own length (Hoffmann et al.
# found that a schedule longer than the run overstates the loss at intermediate budgets); one
# evaluation at the end on held-out text.

# %%
base = notebook.make_config({
    "model": "tiny", "model.n_vocab": VOCAB, "data.vocab": f"bbpe:{VOCAB}",
    "model.embd_pdrop": 0.0, "model.attn_pdrop": 0.0, "model.resid_pdrop": 0.0,
    "data.seq_len": 32 if SMOKE else 64, "batch_size": 8 if SMOKE else 16,
    "optim.lr": 3e-3, "optim.warmup_steps": 1 if SMOKE else 10, "log_every": 1 if SMOKE else 10,
    "eval_every": 1_000_000, "eval_batches": 1 if SMOKE else 8, "ckpt_every": 100, "keep_checkpoints": 1,
    "sample_prompt": "", "workdir": str(OUT)})
shapes = [shape_for_params(n, aspect_ratio=32, head_dim=16, base=base.model) for n in TARGET_PARAMS]
sweep = Sweep(base=base, points=tuple(grid(base, shapes, STEPS)))

# What `gpt2-jax sweep run --dry-run` lists: N (non-embedding), D and training FLOPs per point.
plan = pd.DataFrame(runner.plan(sweep, OUT)).drop(columns=["cfg", "hash"]).set_index("name")
plan[["n_layer", "n_embd", "n_head", "steps", "params", "params_total", "tokens", "flops", "flops_6nd"]]

# %% [markdown]
# ## Train it
#
# `runner.run_sweep` is what `gpt2-jax sweep run` calls: the corpus is tokenized once into
# `OUT/data`, each point trains through `gpt2_jax.train.train` in `OUT/points/NAME/`, and a
# point is done when its `result.json` exists. Interrupt the cell and run it again: finished
# points are skipped, the others resume from their newest checkpoint.

# %%
results = runner.run_sweep(sweep, OUT)
print(f"{len(results)}/{len(sweep.points)} points finished")

# %%
# Running it again trains nothing: every point has its result.json (with a matching config hash).
again = runner.run_sweep(sweep, OUT, progress=False)
assert [r["name"] for r in again] == [r["name"] for r in results]

# %% [markdown]
# ## The results table
#
# `collect` is `gpt2-jax sweep collect`: one row per finished point, losses from the point's
# `metrics.jsonl` (final train batch and held-out eval), N, D and FLOPs from its `result.json`.

# %%
rows, missing = collect(OUT)
assert not missing, f"unfinished points: {missing}; run the training cell again"
csv_path = write_csv(rows, OUT / "results.csv")
table_df = pd.DataFrame(rows).set_index("name")
table_df[["params", "tokens", "flops", "loss", "eval_loss", "tokens_per_sec", "wall_s"]]

# %% [markdown]
# ## Fits
#
# Both laws model the final held-out loss as a function of N and D:
#
# - `kaplan-nd`: L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5),
#   least squares on log L;
# - `chinchilla`: L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, approach 3), Huber loss on
#   log L, with the compute-optimal N_opt, D_opt and loss at the table's largest compute.
#
# Each is refit on bootstrap resamples of the rows; the table gives the full-data value and the
# 95% percentile interval. A resample the fitter refuses (e.g. one that drew a single size) is
# counted, not hidden.

# %%
def fit_table(csv_file, laws=("kaplan-nd", "chinchilla"), k=BOOTSTRAP):
    """Fits each law to eval_loss of `csv_file`: {law: (result, bootstrap)} and a table of values."""
    table = load_table(csv_file, loss_column="eval_loss")
    fits, lines = {}, []
    for law in laws:
        result, boot = fit_law(table, law, k=k, seed=0)
        fits[law] = (result, boot)
        print(f"{law}: objective {result.objective:.4g}; {boot.k} resamples, {boot.failed} refused")
        for name, value in result.values().items():
            # A value some resamples lack (e.g. N_opt when an exponent came out <= 0) has no interval.
            lo, hi = boot.intervals.get(name, (float("nan"), float("nan")))
            lines.append({"law": law, "value": name, "fit": value, "95% low": lo, "95% high": hi})
    return table, fits, pd.DataFrame(lines).set_index(["law", "value"])


table, fits, fitted = fit_table(csv_path)
fitted


# %% [markdown]
# ## Plots
#
# The toolkit's plots (`gpt2-jax scaling fit --plot DIR`) for the chinchilla fit: loss vs
# training FLOPs with each size's fitted curve and the compute-efficient frontier, the bootstrap
# distribution of every parameter, the residuals per run, and train/eval loss vs size at each
# size's largest budget (the view of GPT-2's Figure 4).

# %%
def show_plots(table, fits, csv_file, out_dir):
    result, boot = fits["chinchilla"]
    paths = {p.stem: p for p in plot_all(table, result, boot, out_dir, csv_path=csv_file)}
    for name in ("compute", "figure4", "bootstrap", "residuals"):
        if name in paths:
            display(Image(filename=str(paths[name])))
    return sorted(paths)


show_plots(table, fits, csv_path, PLOTS / "scaling_notebook_sweep")

# %% [markdown]
# ## What these numbers are worth
#
# Not much, as laws. A handful of tiny models trained for at most a few hundred steps on about
# a megabyte of text (in smoke mode a few steps, where the loss has barely left its initial
# value) is far from the regime of Kaplan et al. and Hoffmann et al. (1e6-1e10 parameters,
# billions of tokens). Here the embeddings and the output layer outweigh the "non-embedding"
# N, attention and logits dominate the FLOPs, the learning rate is not tuned per size, and the
# corpus repeats within the larger budgets. With so few rows the five chinchilla parameters
# trade off against each other: look at the width of the bootstrap intervals and at how many
# resamples were refused before reading an exponent, and do not extrapolate N_opt or D_opt.
# What the notebook does show is the workflow, which is the same on a pod: define the grid,
# run it resumably, collect one table, fit, and look at the residuals.

# %% [markdown]
# ## Fitting the shipped study without training
#
# `experiments/benchmarks/scaling_tiny_cpu/results.csv` is the table of the shipped study
# (`experiments/scaling_tiny_cpu.py`: 5 sizes x 4 budgets on a 2-core CPU; command and machine
# in `experiments/benchmarks/RESULTS.md`). Any CSV with `params`, `tokens` and a loss column
# fits the same way; the shell equivalent is
# `gpt2-jax scaling fit results.csv --law chinchilla --loss-column eval_loss --bootstrap 200 --plot DIR`.

# %%
# The checkout this gpt2_jax comes from (the notebook may run from any working directory).
SHIPPED = pathlib.Path(gpt2_jax.__file__).resolve().parents[1] / "experiments/benchmarks/scaling_tiny_cpu/results.csv"
shipped_table, shipped_fits, shipped_fitted = fit_table(SHIPPED)
print(f"{len(shipped_table)} runs from {SHIPPED}")
shipped_fitted

# %%
show_plots(shipped_table, shipped_fits, SHIPPED, PLOTS / "scaling_notebook_shipped")

# %% [markdown]
# ## The WSD study: cooldown branches, cosine controls, and a prediction made before training
#
# `experiments/scaling_wsd_cpu.py` trains one warmup-stable-decay run per size and branches
# short cooldowns off its checkpoints (Hagele et al. 2024), plus separately trained cosine runs
# at the same (N, D) cells. Its table (`sweep collect --curves`) has one row per run end (`final` = 1) and
# one per intermediate evaluation (`final` = 0). Only run ends are comparable across lengths
# (the learning rate has decayed), so the L(N, D) fits take `final == 1`; Kaplan's L(C)
# envelope takes every row. Bits per byte of held-out text is the metric (tokenizer-free).

# %%
STUDY = SHIPPED.parents[1] / "scaling_wsd_cpu"
study = pd.read_csv(STUDY / "results.csv")
ends = study[study["final"] == 1].set_index("name")
ends[["params", "tokens", "schedule", "parent", "branch_step", "eval_bits_per_byte"]]

# %%
# WSD branch vs separately trained cosine run at the same (N, D): relative difference in bpb, over
# the whole grid (four cosine runs in the study, eight in experiments/scaling_wsd_cosine_controls.py,
# all at the study's lr), and at three cells with the cosine lr tuned (names ending -lrx / -to0).
controls = pd.read_csv(STUDY / "cosine_controls.csv")
controls = controls[controls["final"] == 1].set_index("name")
tuned = controls.index.str.contains("-lrx|-to0")
wsd = ends[ends["schedule"] == "wsd"].set_index(["params", "tokens"])["eval_bits_per_byte"]
cosine = pd.concat([ends[ends["schedule"] == "cosine"], controls[~tuned]])
cosine["wsd / cosine - 1"] = [wsd[(r.params, r.tokens)] / r.eval_bits_per_byte - 1 for r in cosine.itertuples()]
print(f"{(cosine['wsd / cosine - 1'].abs() <= 0.01).sum()} of {len(cosine)} cells within 1%; "
      f"mean {cosine['wsd / cosine - 1'].mean():+.2%}")
cosine.pivot_table(index="params", columns="tokens", values="wsd / cosine - 1").style.format("{:+.2%}")

# %%
best = pd.concat([controls[tuned], cosine]).groupby(["params", "tokens"])["eval_bits_per_byte"].min()
best = best[[cell in set(zip(controls[tuned].params, controls[tuned].tokens)) for cell in best.index]]
pd.DataFrame({"best cosine": best, "wsd": wsd[best.index], "wsd / best cosine - 1": wsd[best.index] / best - 1})

# %% [markdown]
# ### The prediction, then the larger model
#
# `gpt2-jax scaling predict` fits the Chinchilla law on the study's run ends and predicts the
# held-out model (~5x the largest fitted N), with a bootstrap interval. That prediction was
# committed (`prediction.json`) before `experiments/scaling_wsd_cpu_holdout.py` trained the
# model; `holdout.csv` is its measured row. Here the same prediction is recomputed from the
# shipped table and compared with the measurement when it is there.

# %%
import json

from gpt2_jax.scaling import predict as predict_mod

written = json.loads((STUDY / "prediction.json").read_text())
at = [f"params={p['params']:.0f},tokens={p['tokens']:.0f}" for p in written["predictions"]]
fit, points, facts = predict_mod.predict(STUDY / "results.csv", "chinchilla", "final==1", at=at,
                                         loss_column="eval_bits_per_byte", k=BOOTSTRAP, seed=0)
print("\n".join(predict_mod.lines(fit, points, facts)))
holdout = STUDY / "holdout.csv"
if holdout.is_file():
    measured = pd.read_csv(holdout).iloc[0]
    p = written["predictions"][0]
    print(f"holdout {measured['name']}: measured {measured['eval_bits_per_byte']:.4f} bpb; written prediction "
          f"{p['predicted']:.4f} [{p['low']:.4f}, {p['high']:.4f}]; error "
          f"{(p['predicted'] - measured['eval_bits_per_byte']) / measured['eval_bits_per_byte']:+.2%}")
    for q in points:
        q.measured = float(measured["eval_bits_per_byte"])
figure = predict_mod.plot(PLOTS / "scaling_notebook_prediction.png", fit, points, STUDY / "results.csv", "final==1",
                          "eval_bits_per_byte")
display(Image(filename=str(figure)))

# %% [markdown]
# ## muP width transfer
#
# `experiments/benchmarks/scaling_mup_transfer.py` trains widths 16-128 over one learning-rate grid,
# three seeds each, under the standard parametrization and under muP (base width 16). Here the
# shipped table is read back: the best LR of each width (on the seed mean) moves 4x under SP and
# 2x under muP across the 8x width range.

# %%
from gpt2_jax import mup_transfer

MUP = SHIPPED.parents[1] / "scaling_mup_transfer.csv"
mup_rows = mup_transfer.read_table(MUP)
print(mup_transfer.format_table(mup_rows))
for parametrization in ("sp", "mup"):
    spread = mup_transfer.transfer_spread(mup_transfer.optimum_lrs(mup_rows, parametrization))
    print(f"{parametrization}: best LR moves {spread:.1f}x across widths")
mup_png = PLOTS / "scaling_notebook_mup_transfer.png"
mup_transfer.plot_transfer(mup_rows, mup_png, title="LR transfer (shipped)")
display(Image(filename=str(mup_png)))
