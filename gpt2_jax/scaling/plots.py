"""Plots of a scaling fit (matplotlib, Agg backend, PNG files).

  compute.png     loss vs training FLOPs, one colour per model size, the compute-efficient
                  frontier, and the law's curve where it has one (kaplan-c: L(C); chinchilla:
                  the loss at the compute-optimal N, D for each C; kaplan-nd/chinchilla: each
                  size's predicted loss as D grows);
  isoflop.png     isoFLOP profiles (loss vs N per compute budget) with their parabolas and minima;
  bootstrap.png   histograms of every bootstrapped parameter, the full-data fit marked;
  residuals.png   observed minus predicted log loss per run (laws that predict each run's loss);
  figure1.png     zero-shot metrics vs model size (sweep collect --zeroshot), GPT-2 Figure 1;
  figure4.png     train and eval loss vs model size at the largest token budget of each size,
                  the view of Radford et al. 2019 Figure 4 (needs loss and eval_loss columns).

Every file is written under a temporary name and renamed, so a plot directory never holds a
half-written image.

References:
  Radford et al. 2019, Figure 4; Hoffmann et al. 2022, Figures 2-4; Kaplan et al. 2020, Figure 1.
"""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np

from gpt2_jax.scaling.bootstrap import Bootstrap
from gpt2_jax.scaling.isoflop import budgets
from gpt2_jax.scaling.kaplan import compute_frontier
from gpt2_jax.scaling.result import FitResult
from gpt2_jax.scaling.table import Table


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def _predicts_runs(result: FitResult) -> bool:
    return result.law in ("kaplan-nd", "chinchilla")


def _frontier_in_table_flops(table: Table, result: FitResult, c: np.ndarray) -> np.ndarray:
    """The fitted law's lowest loss at each compute in `c`, in the table's FLOPs convention: FLOPs per
    token per parameter, flops / (N D), is interpolated log-linearly in N from the rows (with
    attention and logits counted it is not the constant 6 that closed forms assume), then the
    predicted loss is minimised over a grid of N with D = C / (f(N) N)."""
    slope, intercept = np.polyfit(np.log(table.params), np.log(table.flops / (table.params * table.tokens)), 1)
    n = np.geomspace(table.params.min() / 30, table.params.max() * 30, 400)
    per_token = np.exp(intercept + slope * np.log(n)) * n
    return np.array([np.min(result.predict(n, x / per_token)) for x in c])


def plot_compute(plt, table: Table, result: FitResult, out: pathlib.Path) -> pathlib.Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    sizes = np.unique(table.params)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for n, color in zip(sizes, colors):
        rows = table.params == n
        order = np.argsort(table.flops[rows])
        ax.plot(table.flops[rows][order], table.loss[rows][order], "o", color=color, label=f"N={n:,.0f}", ms=4)
        if _predicts_runs(result):
            d = np.geomspace(table.tokens.min(), table.tokens.max() * 4, 50)
            c = table.flops[rows][order][0] / table.tokens[rows][order][0] * d
            ax.plot(c, result.predict(np.full_like(d, n), d), "-", color=color, lw=0.8, alpha=0.7)
    front = compute_frontier(table)
    ax.plot(table.flops[front], table.loss[front], "k--", lw=1, label="compute frontier")
    c = np.geomspace(table.flops.min(), table.flops.max() * 10, 100)
    if result.law == "kaplan-c":
        ax.plot(c, result.predict(c), "r-", lw=1.5, label="L(C) fit")
    if _predicts_runs(result):
        ax.plot(c, _frontier_in_table_flops(table, result, c), "r-", lw=1.5, label="fitted L at the best N for each C")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel=table.loss_column, title=f"loss vs compute ({result.law})")
    ax.legend(fontsize=7)
    path = _save(fig, out / "compute.png")
    plt.close(fig)
    return path


def plot_isoflop(plt, table: Table, result: FitResult, out: pathlib.Path) -> pathlib.Path | None:
    groups = [g for g in budgets(table) if len(np.unique(table.params[g])) >= 3]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(groups)))
    for rows, color in zip(groups, colors):
        x, y = table.params[rows], table.loss[rows]
        ax.plot(x, y, "o", color=color, ms=4, label=f"C={np.exp(np.mean(np.log(table.flops[rows]))):.2g}")
        coef = np.polyfit(np.log(x), y, 2)
        grid = np.geomspace(x.min(), x.max(), 60)
        ax.plot(grid, np.polyval(coef, np.log(grid)), "-", color=color, lw=1)
        if coef[0] > 0:
            n_opt = np.exp(-coef[1] / (2 * coef[0]))
            ax.plot([n_opt], [np.polyval(coef, np.log(n_opt))], "*", color=color, ms=11, mec="k")
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel=table.loss_column, title="isoFLOP profiles (stars: minima)")
    ax.legend(fontsize=7)
    path = _save(fig, out / "isoflop.png")
    plt.close(fig)
    return path


def plot_bootstrap(plt, result: FitResult, boot: Bootstrap, out: pathlib.Path) -> pathlib.Path:
    names = list(result.params)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.hist(boot.samples[name], bins=30, color="0.6")
        ax.axvline(result.params[name], color="r", lw=1.5)
        lo, hi = boot.intervals[name]
        ax.axvspan(lo, hi, color="b", alpha=0.12)
        ax.set_title(f"{name}\n{result.params[name]:.4g} [{lo:.3g}, {hi:.3g}]", fontsize=8)
    fig.suptitle(f"{result.law}: bootstrap ({boot.k} resamples, {boot.failed} refused, {boot.level:.0%} interval)", fontsize=9, y=1.1)
    path = _save(fig, out / "bootstrap.png")
    plt.close(fig)
    return path


def plot_residuals(plt, table: Table, result: FitResult, out: pathlib.Path) -> pathlib.Path:
    residual = np.log(table.loss) - np.log(result.predict(table.params, table.tokens))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sc = ax.scatter(table.flops, residual, c=np.log10(table.params), cmap="viridis", s=16)
    fig.colorbar(sc, ax=ax, label="log10 N")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="log L observed - predicted",
           title=f"{result.law} residuals (rms {np.sqrt(np.mean(residual**2)):.3g})")
    path = _save(fig, out / "residuals.png")
    plt.close(fig)
    return path


def plot_figure4(plt, csv_path: pathlib.Path, out: pathlib.Path) -> pathlib.Path | None:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss") and r.get("eval_loss")]
    if not rows:
        return None
    best: dict[float, dict] = {}
    for r in rows:  # the largest token budget of each size
        n = float(r["params"])
        if n not in best or float(r["tokens"]) > float(best[n]["tokens"]):
            best[n] = r
    n = np.array(sorted(best))
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.plot(n, [float(best[x]["loss"]) for x in n], "o-", label="train")
    ax.plot(n, [float(best[x]["eval_loss"]) for x in n], "s-", label="eval")
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="loss (nats/token)",
           title="train and eval loss vs model size\n(largest token budget per size; cf. GPT-2 Figure 4)")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels collide over a narrow range
    ax.legend()
    path = _save(fig, out / "figure4.png")
    plt.close(fig)
    return path


def plot_figure1(plt, csv_path: pathlib.Path, out: pathlib.Path) -> pathlib.Path | None:
    """Zero-shot metric vs parameters, one panel per task (sweep collect --zeroshot), at the largest
    token budget of each size among the ends of schedules: the view of GPT-2's Figure 1."""
    from gpt2_jax.scaling.zeroshot import columns

    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("final", "1") == "1"]
    present = [c for c in columns() if c.endswith(("perplexity", "acc")) and any(r.get(c) for r in rows)]
    if not present:
        return None
    best: dict[float, dict] = {}
    for r in rows:
        n = float(r["params"])
        if n not in best or float(r["tokens"]) > float(best[n]["tokens"]):
            best[n] = r
    n = np.array(sorted(best))
    fig, axes = plt.subplots(1, len(present), figsize=(3.4 * len(present), 3.4), squeeze=False)
    for ax, col in zip(axes[0], present):
        ax.plot(n, [float(best[x][col] or "nan") for x in n], "o-")
        ax.set(xscale="log", xlabel="non-embedding parameters N", title=col.replace("_", " "))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        if col.endswith("perplexity"):
            ax.set_yscale("log")
    fig.suptitle("zero-shot metrics vs model size (largest token budget per size; cf. GPT-2 Figure 1)", fontsize=9)
    path = _save(fig, out / "figure1.png")
    plt.close(fig)
    return path


def plot_all(table: Table, result: FitResult, boot: Bootstrap | None, out: str | pathlib.Path,
             csv_path: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_compute(plt, table, result, out), plot_isoflop(plt, table, result, out)]
    if boot is not None:
        paths.append(plot_bootstrap(plt, result, boot, out))
    if _predicts_runs(result):
        paths.append(plot_residuals(plt, table, result, out))
    if csv_path is not None:
        paths.append(plot_figure4(plt, pathlib.Path(csv_path), out))
        paths.append(plot_figure1(plt, pathlib.Path(csv_path), out))
    return [p for p in paths if p is not None]
