"""A results table for fitting: validated columns params (N), tokens (D), loss and flops (C).

`load_table` reads a CSV (e.g. from `gpt2-jax sweep collect`); only the columns the fits use are
read, others are ignored. `flops` defaults to 6 * params * tokens (Kaplan et al.'s C) when the
CSV has no such column. Every value must be a finite positive number: a missing column, an
empty or non-numeric cell, zero, a negative number or NaN is refused with the column and row
named. Rows are kept in a canonical order (sorted by N, D, C, loss), so a fit never depends on
the order of the file's rows.

References:
  Kaplan et al. 2020, section 2.1 (C = 6ND).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import pathlib

import numpy as np

from gpt2_jax.scaling.errors import ScalingError

REQUIRED = ("params", "tokens")


@dataclasses.dataclass(frozen=True)
class Table:
    """Parallel float64 arrays, one entry per run, in canonical order."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    loss_column: str = "loss"

    @classmethod
    def build(cls, params, tokens, loss, flops=None, loss_column: str = "loss", where: str = "the table") -> "Table":
        params, tokens, loss = (np.asarray(x, np.float64).reshape(-1) for x in (params, tokens, loss))
        flops = 6.0 * params * tokens if flops is None else np.asarray(flops, np.float64).reshape(-1)
        if not (len(params) == len(tokens) == len(loss) == len(flops)):
            raise ScalingError(f"{where}: columns have different lengths")
        for name, values in (("params", params), ("tokens", tokens), (loss_column, loss), ("flops", flops)):
            bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
            if len(bad):
                raise ScalingError(f"{where}: column {name!r} has a non-positive or non-finite value "
                                   f"{float(values[bad[0]])!r} in row {bad[0] + 1}; every value must be a finite number > 0")
        order = np.lexsort((loss, flops, tokens, params))
        return cls(params[order], tokens[order], loss[order], flops[order], loss_column)

    def __len__(self) -> int:
        return len(self.loss)

    def take(self, index: np.ndarray) -> "Table":
        """The rows at `index` (e.g. a bootstrap resample), in canonical order again."""
        return Table.build(self.params[index], self.tokens[index], self.loss[index], self.flops[index], self.loss_column)

    def require(self, n_params: int, law: str) -> None:
        if len(self) < n_params + 1:
            raise ScalingError(f"law {law!r} has {n_params} parameters but the table has {len(self)} rows; "
                               f"it needs at least {n_params + 1}")


def _number(text: str, column: str, row: int, path: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ScalingError(f"{path}: column {column!r} row {row} is {text!r}, not a number") from None
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise ScalingError(f"{path}: column {column!r} row {row} is {text!r}; every value must be a finite number > 0")
    return value


def load_table(path: str | pathlib.Path, loss_column: str = "loss") -> Table:
    """Reads the columns params, tokens, `loss_column` and (optional) flops of a CSV file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ScalingError(f"results file {str(path)!r} does not exist; make one with `gpt2-jax sweep collect`")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ScalingError(f"{str(path)!r} is not a UTF-8 text CSV file (byte {e.start} is {e.object[e.start]:#04x}); "
                           f"pass the CSV written by `gpt2-jax sweep collect`") from None
    if "\0" in text:
        raise ScalingError(f"{str(path)!r} holds NUL bytes: it is not a CSV file; pass the CSV written by `gpt2-jax sweep collect`")
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in (*REQUIRED, loss_column):
            if column not in header:
                raise ScalingError(f"{str(path)!r} has no column {column!r} (columns: {', '.join(header) or 'none'}); "
                                   f"the fits need params, tokens and {loss_column}")
        columns = [*REQUIRED, loss_column] + (["flops"] if "flops" in header else [])
        values = {c: [] for c in columns}
        for i, row in enumerate(reader, start=2):  # row 1 is the header
            for c in columns:
                values[c].append(_number((row.get(c) or "").strip(), c, i, str(path)))
    if not values["params"]:
        raise ScalingError(f"{str(path)!r} has no data rows")
    return Table.build(values["params"], values["tokens"], values[loss_column], values.get("flops"), loss_column,
                       where=str(path))
