"""Collecting a sweep directory into a results table: one CSV row per finished point (and its curve).

Columns: name, params (non-embedding N), params_total, tokens (D), flops (D * flops_per_token,
attention included; see sweep.py), flops_6nd (Kaplan's 6ND), n_layer, n_embd, n_head, steps, lr,
schedule (cosine or wsd), parent and branch_step (a cooldown branch's long run and the step it
started from; empty otherwise), cooldown_tokens (tokens the branch trained itself), final (1: the
run's end, 0: an intermediate step), loss (train loss: the logged loss of the last step's batch),
eval_loss (mean over the eval batches), bits_per_byte and eval_bits_per_byte (the losses in bits
per UTF-8 byte of text, when the data manifest records bytes per token: comparable across
vocabularies), tokens_per_sec (median over the run's logged windows; the first, compiling step
excluded), wall_s (wall time of the run segment that finished the point), config_hash, version;
with zero-shot evaluation (zeroshot.py), one column per task metric.

Which rows are comparable. A row with final=1 is the end of a schedule: a cosine run decayed to
its minimum, or a WSD run (long run or cooldown branch) after its cooldown. These are the rows for
L(N, D) fits (chinchilla, kaplan-nd; `--fit-on final==1`). With `curves=True` the table also gets
one row per intermediate evaluation (final=0, named NAME@STEP, tokens and flops up to that step):
the whole run, as Kaplan et al. use for the L(C) envelope (kaplan-c, envelope), where the frontier
picks the lowest loss at each compute. An intermediate row's learning rate has not decayed (a
cosine run midway, a WSD run before its cooldown), so its loss is higher than a run of that length
would reach: it bounds the envelope from above and never enters an L(N, D) fit by default.

References:
  gpt2_jax/scaling/runner.py (the sweep directory layout).
  Kaplan et al. 2020, section 6.1 (L(C) from whole learning curves).
  Hagele et al. 2024, section 4 (only cooled-down points match separately trained runs).
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
           "lr", "schedule", "seed", "parent", "branch_step", "cooldown_tokens", "final", "loss", "eval_loss",
           "bits_per_byte", "eval_bits_per_byte", "tokens_per_sec", "wall_s", "config_hash", "version")
LOSSES = ("loss", "eval_loss", "bits_per_byte", "eval_bits_per_byte")


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
    last = {k: v for r in records if r.get("step") == result["steps"] for k, v in r.items()}
    speeds = [r["tokens_per_sec"] for r in records if "tokens_per_sec" in r]
    row = {k: result.get(k) for k in COLUMNS}
    row.update({k: last.get(k, result.get(k)) for k in LOSSES})
    row.update(final=1, schedule=result.get("schedule") or "cosine",
               tokens_per_sec=statistics.median(speeds) if speeds else None)
    return row


def curve_rows(workdir: pathlib.Path, final: dict) -> list[dict]:
    """One row per intermediate step with an eval loss (final=0), the run's end excluded; tokens
    and flops are the point's scaled to the step. A branch's curve starts after its branch step
    (the steps before it are its parent's)."""
    rows = []
    for r in _metrics(workdir / "metrics.jsonl"):
        step = r.get("step")
        if "eval_loss" not in r or not step or step >= final["steps"]:
            continue
        frac = step / final["steps"]
        row = {k: final.get(k) for k in COLUMNS}
        row.update({k: r.get(k) for k in LOSSES}, name=f"{final['name']}@{step}", steps=step, final=0,
                   tokens=round(final["tokens"] * frac), flops=final["flops"] * frac, flops_6nd=final["flops_6nd"] * frac,
                   tokens_per_sec=None, wall_s=None)
        rows.append(row)
    return rows


def collect(sweep_dir: str | pathlib.Path, *, curves: bool = False, zeroshot: str | None = None,
            zeroshot_limit: int | None = None) -> tuple[list[dict], list[str]]:
    """(rows of finished points in sweep order, names of unfinished points); with `curves`, each
    point's intermediate-step rows follow its final row; with `zeroshot` (eval data), each final
    row gets the zero-shot columns of zeroshot.py."""
    sweep_dir = pathlib.Path(sweep_dir)
    index = sweep_dir / "sweep.json"
    if not index.is_file():
        raise ScalingError(f"{str(sweep_dir)!r} is not a sweep directory (no sweep.json); "
                           f"pass the --out of `gpt2-jax sweep run`")
    names = [p["name"] for p in json.loads(index.read_text())["points"]]
    rows, missing = [], []
    for name in names:
        row = point_row(sweep_dir / "points" / name)
        if row is None:
            missing.append(name)
            continue
        if zeroshot:
            from gpt2_jax.scaling.zeroshot import point_columns

            row.update(point_columns(sweep_dir / "points" / name, row["config_hash"], zeroshot, zeroshot_limit))
        rows.append(row)
        if curves:
            rows.extend(curve_rows(sweep_dir / "points" / name, row))
    return rows, missing


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def to_csv(rows: list[dict]) -> str:
    """COLUMNS, then any further columns the rows carry (e.g. zero-shot metrics), in first-seen order."""
    extra = [k for row in rows for k in row if k not in COLUMNS]
    columns = list(COLUMNS) + list(dict.fromkeys(extra))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(rows: list[dict], path: str | pathlib.Path) -> pathlib.Path:
    """Writes the table atomically (a temporary name, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(to_csv(rows))
    tmp.replace(path)
    return path
