"""Collecting a sweep directory into a results table: one CSV row per finished point.

Columns: name, params (non-embedding N), params_total, tokens (D), flops (D * flops_per_token,
attention included; see sweep.py), flops_6nd (Kaplan's 6ND), n_layer, n_embd, n_head, steps, lr,
loss (final train loss: the logged loss of the last step's batch), eval_loss (mean over the
eval batches after the last step), tokens_per_sec (median over the run's logged windows; the
first, compiling step excluded), wall_s (wall time of the run segment that finished the point),
config_hash, version. The losses come from the point's metrics.jsonl, the rest from its
result.json. The eval tasks of the evaluation package are not collected yet.

References:
  gpt2_jax/scaling/runner.py (the sweep directory layout).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import statistics

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.runner import RESULT

COLUMNS = ("name", "params", "params_total", "tokens", "flops", "flops_6nd", "n_layer", "n_embd", "n_head", "steps",
           "lr", "loss", "eval_loss", "tokens_per_sec", "wall_s", "config_hash", "version")


def _metrics(path: pathlib.Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def point_row(workdir: pathlib.Path) -> dict | None:
    """The results row of one finished point directory (None if it has not finished)."""
    if not (workdir / RESULT).is_file():
        return None
    result = json.loads((workdir / RESULT).read_text())
    records = _metrics(workdir / "metrics.jsonl")
    last = [r for r in records if r.get("step") == result["steps"]]
    loss = next((r["loss"] for r in last if "loss" in r), result["loss"])
    eval_loss = next((r["eval_loss"] for r in last if "eval_loss" in r), result.get("eval_loss"))
    speeds = [r["tokens_per_sec"] for r in records if "tokens_per_sec" in r]
    row = {k: result.get(k) for k in COLUMNS}
    row.update(loss=loss, eval_loss=eval_loss, tokens_per_sec=statistics.median(speeds) if speeds else None)
    return row


def collect(sweep_dir: str | pathlib.Path) -> tuple[list[dict], list[str]]:
    """(rows of finished points in sweep order, names of unfinished points)."""
    sweep_dir = pathlib.Path(sweep_dir)
    index = sweep_dir / "sweep.json"
    if not index.is_file():
        raise ScalingError(f"{str(sweep_dir)!r} is not a sweep directory (no sweep.json); "
                           f"pass the --out of `gpt2-jax sweep run`")
    names = [p["name"] for p in json.loads(index.read_text())["points"]]
    rows, missing = [], []
    for name in names:
        row = point_row(sweep_dir / "points" / name)
        (rows.append(row) if row else missing.append(name))
    return rows, missing


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def write_csv(rows: list[dict], path: str | pathlib.Path) -> pathlib.Path:
    """Writes the table atomically (a temporary name, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(to_csv(rows))
    tmp.replace(path)
    return path
