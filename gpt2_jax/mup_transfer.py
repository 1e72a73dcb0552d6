"""μP learning-rate transfer: the sweep's table, the optimum per width, and its plot.

An LR-transfer sweep trains models of several widths over one grid of learning rates, under the
standard parametrization and under μP, with one or more seeds, and records the final validation
loss of each run (experiments/benchmarks/scaling_mup_transfer.py writes it as CSV with the columns
`parametrization, width, lr, seed, val_loss`; a table without `seed` is one seed). The question it
answers (Yang et al. 2022, Figure 1): does the best learning rate stay put as the model widens?
Everything below works on the seed-mean loss of each (parametrization, width, lr): a run that
diverged makes its point's mean inf. `optimum_lrs` finds the best LR per width, on the grid and
refined by a parabola through the grid minimum and its two neighbours in log2(lr), and says how
much the seeds disagree (each seed's own grid argmin, the standard error at the optimum);
`transfer_spread` is max/min of those optima across widths (1 = perfect transfer); `plot_transfer`
draws loss against LR, one line per width, one panel per parametrization.

References:
  Yang et al. 2022, "Tensor Programs V", Figure 1 and section 6 (LR transfer across width).
"""

from __future__ import annotations

import csv
import math
import pathlib

COLUMNS = ("parametrization", "width", "lr", "seed", "val_loss")


def read_table(path: str | pathlib.Path) -> list[dict]:
    """Rows of a sweep CSV as dicts with typed values (non-finite losses stay as inf/nan; no
    `seed` column means seed 0)."""
    with open(path, newline="") as f:
        return [{"parametrization": r["parametrization"], "width": int(r["width"]), "lr": float(r["lr"]),
                 "seed": int(r.get("seed") or 0), "val_loss": float(r["val_loss"])} for r in csv.DictReader(f)]


def write_table(rows: list[dict], path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, 0) for k in COLUMNS} for row in rows)
    return path


def _finite(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf  # nan (a diverged run) counts as worst


def _per_seed(rows: list[dict], parametrization: str, width: int) -> dict[float, dict[int, float]]:
    """{lr: {seed: loss}} of one width."""
    out: dict[float, dict[int, float]] = {}
    for r in rows:
        if r["parametrization"] == parametrization and r["width"] == width:
            out.setdefault(r["lr"], {})[r.get("seed", 0)] = _finite(r["val_loss"])
    return out


def _curve(rows: list[dict], parametrization: str, width: int) -> list[tuple[float, float]]:
    """[(lr, seed-mean loss)] sorted by lr; inf where any seed diverged."""
    return sorted((lr, sum(by_seed.values()) / len(by_seed)) for lr, by_seed in _per_seed(rows, parametrization, width).items())


def _grid_argmin(curve: list[tuple[float, float]]) -> int:
    return min(range(len(curve)), key=lambda i: curve[i][1])


def optimum_lrs(rows: list[dict], parametrization: str) -> dict[int, dict]:
    """{width: {"grid": best LR of the seed-mean curve on the grid, "refined": parabola vertex in
    log2(lr), "loss": best seed-mean loss, "sem": standard error of the mean there (0 with one
    seed), "seed_grid": each seed's own grid argmin LR, "edge": True when the best LR is the grid's
    first or last (the optimum may lie beyond)}}."""
    out = {}
    for width in sorted({r["width"] for r in rows if r["parametrization"] == parametrization}):
        per_seed = _per_seed(rows, parametrization, width)
        curve = _curve(rows, parametrization, width)
        losses = [loss for _, loss in curve]
        i = _grid_argmin(curve)
        edge = i in (0, len(curve) - 1)
        refined = curve[i][0] if edge else _parabola_vertex(curve, i)
        sem = _standard_error(list(per_seed[curve[i][0]].values()))
        seeds = sorted({seed for by_seed in per_seed.values() for seed in by_seed})
        seed_grid = [curve[_grid_argmin([(lr, per_seed[lr].get(seed, math.inf)) for lr, _ in curve])][0] for seed in seeds]
        out[width] = {"grid": curve[i][0], "refined": refined, "loss": losses[i], "sem": sem, "seed_grid": seed_grid,
                      "edge": edge}
    return out


def _parabola_vertex(curve: list[tuple[float, float]], i: int) -> float:
    """The LR at the vertex of the parabola through grid points i-1, i, i+1 in (log2 lr, loss),
    kept between the neighbours; the grid LR itself when they do not bracket a minimum."""
    points = [(math.log2(curve[j][0]), curve[j][1]) for j in (i - 1, i, i + 1)]
    if not all(math.isfinite(y) for _, y in points):
        return curve[i][0]
    (x0, y0), (x1, y1), (x2, y2) = points
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    return 2.0 ** min(max(-b / (2 * a), x0), x2) if a > 0 else curve[i][0]


def _standard_error(losses: list[float]) -> float:
    """Standard error of the mean of the seeds' losses (0 with one seed or a diverged one)."""
    if len(losses) < 2 or not all(math.isfinite(x) for x in losses):
        return 0.0
    mean = sum(losses) / len(losses)
    return (sum((x - mean) ** 2 for x in losses) / (len(losses) - 1) / len(losses)) ** 0.5


def transfer_spread(optima: dict[int, dict], key: str = "grid") -> float:
    """max / min of the optimum LR across widths (1 = the same LR everywhere)."""
    lrs = [o[key] for o in optima.values()]
    return max(lrs) / min(lrs)


def format_table(rows: list[dict]) -> str:
    """Seed-mean loss per (parametrization, width) and LR, the best marked with *, then each
    optimum (grid, refined), the standard error at it and each seed's own best LR (log2)."""
    lrs = sorted({r["lr"] for r in rows})
    lines = [f"{'param':5} {'width':>5} " + " ".join(f"{lr:>8.1e}" for lr in lrs) +
             "   best lr (grid, refined) +- sem at best; per-seed best log2(lr)"]
    for parametrization in ("sp", "mup"):
        optima = optimum_lrs(rows, parametrization)
        for width, best in optima.items():
            losses = dict(_curve(rows, parametrization, width))
            cells = []
            for lr in lrs:
                loss = losses.get(lr, math.nan)
                mark = "*" if lr == best["grid"] else " "
                cells.append(f"{loss:>7.3f}{mark}" if math.isfinite(loss) else f"{'diverge':>7} ")
            edge = " (grid edge)" if best["edge"] else ""
            seed_best = ",".join(f"{math.log2(lr):g}" for lr in best["seed_grid"])
            lines.append(f"{parametrization:5} {width:>5} " + " ".join(cells) +
                         f"   {best['grid']:.1e}, {best['refined']:.1e}{edge} +-{best['sem']:.3f}; {seed_best}")
        if optima:
            lines.append(f"{parametrization:5} spread of the optimum across widths: {transfer_spread(optima):.1f}x on the "
                         f"grid, {transfer_spread(optima, 'refined'):.1f}x refined")
    return "\n".join(lines)


def plot_transfer(rows: list[dict], out: str | pathlib.Path | None = None, *, title: str = ""):
    """Validation loss against learning rate, one line per width (the seed mean; a band spans the
    seeds' min..max), SP and μP side by side; the optimum of each width is marked. Saves a PNG when `out` is given; returns the figure."""
    import matplotlib

    if out is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    finite = [r["val_loss"] for r in rows if math.isfinite(r["val_loss"])]
    top = min(max(finite), min(finite) + 1.5) if finite else 1.0
    for ax, parametrization, name in zip(axes, ("sp", "mup"), ("standard (SP)", "μP")):
        optima = optimum_lrs(rows, parametrization)
        for width, best in optima.items():
            curve = _curve(rows, parametrization, width)
            clip = lambda loss: min(loss, top) if math.isfinite(loss) else top
            line, = ax.plot([lr for lr, _ in curve], [clip(loss) for _, loss in curve],
                            marker="o", ms=3, label=f"width {width}")
            per_seed = _per_seed(rows, parametrization, width)
            if any(len(by_seed) > 1 for by_seed in per_seed.values()):  # the seeds' range around the mean
                ax.fill_between([lr for lr, _ in curve], [clip(min(per_seed[lr].values())) for lr, _ in curve],
                                [clip(max(per_seed[lr].values())) for lr, _ in curve], color=line.get_color(), alpha=0.15)
            ax.plot([best["grid"]], [best["loss"]], marker="*", ms=12, color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate (Adam, base)")
        ax.set_title(name + (f": optimum spread {transfer_spread(optima):.0f}x (grid), "
                             f"{transfer_spread(optima, 'refined'):.1f}x (refined)" if optima else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (nats/byte, seed mean), clipped")
    axes[0].set_ylim(top=top)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=120)
    return fig
