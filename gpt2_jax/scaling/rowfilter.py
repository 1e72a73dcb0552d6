"""Row filters for results tables: `params<=1e9`, `params<1e8 and tokens>=2e9`, `schedule==wsd`.

`scaling predict --fit-on FILTER` chooses the rows a law is fit on with such a filter. A filter is
one or more comparisons `COLUMN OP NUMBER` (OP one of <=, >=, <, >, ==, !=) or `COLUMN == WORD` /
`COLUMN != WORD` (a text cell, e.g. schedule==wsd) joined by `and` or a comma; every comparison
must hold. It is parsed by a regular expression, never evaluated as
Python, so a filter cannot run code. Columns are checked against the table's header, and a
malformed comparison, unknown column or non-number is refused with one message naming it.
A row whose cell is empty or not a number fails every comparison on that column.

References:
  Python's operator module (the comparison functions).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from typing import Callable

from gpt2_jax.scaling.errors import ScalingError

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_COMPARISON = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*([^\s<>=!]+)\s*$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+-]*$")
_SPLIT = re.compile(r"\s+and\s+|,")


@dataclasses.dataclass(frozen=True)
class Comparison:
    column: str
    op: str
    value: float | str  # a string only with == and != (e.g. schedule==wsd)

    def holds(self, row: dict) -> bool:
        if isinstance(self.value, str):
            return OPERATORS[self.op]((row.get(self.column) or "").strip(), self.value)
        try:
            cell = float(row.get(self.column) or "nan")
        except ValueError:
            return False
        return not math.isnan(cell) and OPERATORS[self.op](cell, self.value)

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.value if isinstance(self.value, str) else format(self.value, 'g')}"


@dataclasses.dataclass(frozen=True)
class RowFilter:
    """All of `comparisons` must hold (an empty filter keeps every row)."""

    comparisons: tuple[Comparison, ...]
    text: str

    def __call__(self, row: dict) -> bool:
        return all(c.holds(row) for c in self.comparisons)


def parse_filter(text: str, columns: list[str] | tuple[str, ...], *, flag: str = "--fit-on") -> RowFilter:
    """Parses `text` against the table's `columns`; ScalingError names the bad part and the syntax."""
    syntax = f"use COLUMN OP NUMBER joined by 'and' or ',', OP one of {' '.join(OPERATORS)} (e.g. 'params<=1e9')"
    if not text or not text.strip():
        raise ScalingError(f"{flag} is empty; {syntax}")
    comparisons = []
    for part in _SPLIT.split(text):
        match = _COMPARISON.match(part)
        if not match:
            raise ScalingError(f"{flag} {text!r}: {part.strip()!r} is not a comparison; {syntax}")
        column, op, number = match.groups()
        if column not in columns:
            raise ScalingError(f"{flag} {text!r}: the table has no column {column!r} (columns: {', '.join(columns)})")
        try:
            value = float(number)
        except ValueError:
            if op not in ("==", "!=") or not _WORD.match(number):
                raise ScalingError(f"{flag} {text!r}: {number!r} is not a number (a word compares only with == "
                                   f"or !=); {syntax}") from None
            value = number
        if isinstance(value, float) and math.isnan(value):
            raise ScalingError(f"{flag} {text!r}: nan compares false with everything; {syntax}")
        comparisons.append(Comparison(column, op, value))
    return RowFilter(tuple(comparisons), text)
