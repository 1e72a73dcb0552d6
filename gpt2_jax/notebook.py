"""A Python face for notebooks: train, compare over seeds, plot; all through `train.train`.

`run(config or overrides)` trains (or resumes, or just loads a finished) run in its workdir and
returns a `Run`: the metrics as a pandas DataFrame, the final parameters, the checkpoint
directory. `runs(grid, seeds=...)` trains one run per grid entry and seed, each in its own
workdir under `root`; `compare(runs, metric=...)` plots each entry's mean over seeds with the
min-max band, and `summary(runs, metric=...)` tabulates the final values with their spread.
`load(workdir)` reopens a run without training.

There is no second training path: `run` builds a `TrainConfig` (the same `key=value`
overrides as `gpt2-jax train`) and calls `gpt2_jax.train.train`, so what a notebook finds holds
for the CLI and a pod, and a workdir holding another model is refused exactly as `train`
refuses it. In Jupyter the progress bar is tqdm.auto's widget, absl (Orbax) logging is quieted
to errors, and interrupting the cell (SIGINT) stops at the next step with a checkpoint: the
returned Run says `stopped='SIGINT'` and running the same cell again resumes.

References:
  gpt2_jax/train.py (the one training loop); pandas and matplotlib for tables and figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from gpt2_jax.config import ConfigError, TrainConfig, apply_overrides

Overrides = Mapping[str, Any] | Sequence[str]


@dataclasses.dataclass
class Run:
    """One training run as a notebook sees it."""

    config: TrainConfig
    workdir: pathlib.Path
    metrics: Any  # pandas.DataFrame, one row per logged step (columns as in metrics.jsonl)
    params: Any  # the final parameters (None when the run has no checkpoint yet)
    step: int
    label: str = ""
    stopped: str | None = None  # e.g. "SIGINT" when interrupted; run() again to resume
    log: str = ""  # what training printed (when run quietly)

    @property
    def checkpoint(self) -> pathlib.Path:
        """The checkpoint directory (`gpt2-jax sample`, `export`, `checkpoint.restore` take it)."""
        return self.workdir / "checkpoints"

    @property
    def seed(self) -> int:
        return self.config.seed

    def final(self, metric: str = "eval_bits_per_byte") -> float:
        """The last logged value of `metric`."""
        if metric not in self.metrics or self.metrics[metric].dropna().empty:
            known = [c for c in self.metrics.columns if c != "step"]
            raise ConfigError(f"run {self.label or self.workdir} logged no {metric!r}; logged metrics: {known}")
        return float(self.metrics[metric].dropna().iloc[-1])

    def __repr__(self) -> str:
        state = f"stopped={self.stopped!r}" if self.stopped else f"step={self.step}"
        return f"Run({self.label or str(self.workdir)!r}, {state}, workdir={str(self.workdir)!r})"


def make_config(config: TrainConfig | Overrides | None = None, overrides: Overrides | None = None) -> TrainConfig:
    """A TrainConfig from a TrainConfig and/or overrides ({"model.n_layer": 2} or ["model.n_layer=2"]),
    on top of the CLI's default (the demo) when no TrainConfig is given."""
    if config is not None and not isinstance(config, TrainConfig):
        config, overrides = None, list(_as_overrides(config)) + list(_as_overrides(overrides))
    return apply_overrides(config or TrainConfig(), list(_as_overrides(overrides)))


def _as_overrides(overrides: Overrides | None) -> Iterable[str]:
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise ConfigError(f"overrides {overrides!r} must be a list of key=value strings or a dict, not one string")
    if isinstance(overrides, Mapping):
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()]
    return list(overrides)


@contextlib.contextmanager
def _quiet(verbose: bool, log: io.StringIO):
    """absl (Orbax) logs to errors only; training's printed lines into `log` unless verbose."""
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(log):
            yield
    finally:
        absl_logging.set_verbosity(level)


def run(config: TrainConfig | Overrides | None = None, overrides: Overrides | None = None, *, label: str = "",
        verbose: bool = False, progress: bool = True) -> Run:
    """Trains `config` (plus `overrides`) in its workdir, or resumes it, or (when it has reached
    `steps`) just loads it. A workdir holding another model is refused (ConfigError)."""
    from gpt2_jax.train import train

    cfg = make_config(config, overrides)
    log = io.StringIO()
    lines: list[str] = []

    def say(line: str) -> None:
        (print if verbose else lines.append)(line)

    with _quiet(verbose, log):
        result = train(cfg, say=say, progress=progress)
    text = "\n".join(lines) + ("\n" if lines else "") + log.getvalue()
    if result.stopped:
        print(f"{result.stopped}: stopped after step {result.step} with a checkpoint; run again to resume")
    return Run(cfg, pathlib.Path(cfg.workdir), read_metrics(cfg.workdir), result.params, result.step,
               label=label, stopped=result.stopped, log=text)


def runs(grid: Mapping[str, Overrides], *, seeds: Sequence[int] = (0, 1, 2), base: TrainConfig | Overrides | None = None,
         root: str | pathlib.Path = "runs/notebook", verbose: bool = False, progress: bool = True) -> list[Run]:
    """One run per (grid entry, seed): `grid` maps a label to its overrides on `base`; the
    workdir is ROOT/LABEL/seedS. Finished runs are loaded, unfinished ones resumed."""
    out = []
    for label, overrides in grid.items():
        for seed in seeds:
            cfg = make_config(make_config(base), list(_as_overrides(overrides))
                              + [f"seed={seed}", f"workdir={pathlib.Path(root) / label / f'seed{seed}'}"])
            out.append(run(cfg, label=label, verbose=verbose, progress=progress))
            if out[-1].stopped:
                break
        if out and out[-1].stopped:
            break
    return out


def read_metrics(workdir: str | pathlib.Path):
    """WORKDIR/metrics.jsonl as a DataFrame (one row per logged step; empty if none)."""
    import pandas as pd

    path = pathlib.Path(workdir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
    frame = pd.DataFrame(rows)
    if "step" not in frame:
        frame["step"] = pd.Series(dtype=int)
    return frame.apply(pd.to_numeric, errors="coerce")  # "nan"/"inf" strings -> floats


def load(workdir: str | pathlib.Path, *, label: str = "") -> Run:
    """A finished (or stopped) run from its workdir, without training: the newest checkpoint's
    config and parameters, and the metrics."""
    from gpt2_jax import checkpoint

    workdir = pathlib.Path(workdir)
    step, cfg, params, _ = checkpoint.restore(checkpoint.resolve_dir(workdir / "checkpoints"))
    return Run(cfg, workdir, read_metrics(workdir), params, step, label=label)


def _by_label(all_runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in all_runs:
        groups.setdefault(r.label or str(r.workdir), []).append(r)
    return groups


def summary(all_runs: Sequence[Run], metric: str = "eval_bits_per_byte"):
    """Final `metric` per label over seeds: n, mean, std (sample), min, max, and the values."""
    import numpy as np
    import pandas as pd

    rows = []
    for label, group in _by_label(all_runs).items():
        values = np.array([r.final(metric) for r in group])
        rows.append({"label": label, "seeds": len(values), "mean": values.mean(),
                     "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                     "min": values.min(), "max": values.max(), "values": [round(float(v), 4) for v in values]})
    return pd.DataFrame(rows).set_index("label")


def compare(all_runs: Sequence[Run], metric: str = "eval_bits_per_byte", *, x: str = "step",
            title: str | None = None, ax=None):
    """A matplotlib Figure: per label, the mean of `metric` over seeds against `x` (a metrics
    column: "step", or e.g. a "bytes_seen" column the notebook added), with the band between
    the lowest and highest seed."""
    import matplotlib.pyplot as plt
    import pandas as pd

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for label, group in _by_label(all_runs).items():
        series = {}
        for r in group:
            if metric in r.metrics:
                s = r.metrics.dropna(subset=[metric]).set_index(x)[metric]
                series[r.seed] = s
        if not series:
            raise ConfigError(f"no run labelled {label!r} logged {metric!r}")
        table = pd.DataFrame(series)  # [steps, seeds]
        mean = table.mean(axis=1)
        (line,) = ax.plot(mean.index, mean.values, label=f"{label} (n={table.shape[1]})")
        if table.shape[1] > 1:
            ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=line.get_color(), alpha=0.2)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric}: mean over seeds, band = min..max")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
