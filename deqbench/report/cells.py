"""Report values as table cells and log fields: numbers to three significant digits with
thousands separators (``1,390``, never ``1.39e+03``), small ones in plain decimals down to
``0.0001`` (``0.00047``) and in scientific notation only below it (``1e-12``); options as
``k=v, k=v``; and table columns whose numbers are never broken across lines."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rich.table import Table

EMPTY = "–"  #: an empty cell: no value, an empty CSV cell (NaN), None
DIGITS = 3  #: significant digits of a float
_PLAIN_BELOW = 1e-4  #: smaller magnitudes are written in scientific notation


def fmt(value: Any) -> str:
    """A report value as a cell: `EMPTY` for none, an integer in full with thousands
    separators, a float to `DIGITS` significant digits (`number`), anything else as text."""
    if value is None or (isinstance(value, str) and value == ""):
        return EMPTY
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return number(float(value))
    return str(value)


def number(value: float, digits: int = DIGITS) -> str:
    """``value`` to ``digits`` significant digits: ``1390.2 → "1,390"``, ``20000.0 →
    "20,000"``, ``0.00047 → "0.00047"``, ``1e-12 → "1e-12"``; NaN is `EMPTY`."""
    if math.isnan(value):
        return EMPTY
    if value == 0 or math.isinf(value):
        return f"{value:g}"
    rounded = float(f"{value:.{digits}g}")  # 999.96 rounds to 1000: decide on the rounded value
    if abs(rounded) >= 1000:
        return f"{rounded:,.0f}"
    if abs(rounded) >= _PLAIN_BELOW:  # `g` writes these exponents (-4 to 2) in plain decimals
        return f"{rounded:.{digits}g}"
    return f"{value:.{digits}g}"


def options_text(value: Any) -> str:
    """Options (a mapping, or its JSON as a report stores it) as ``k=v, k=v``, nested tables
    as dotted keys; ``{}`` is the empty string. Other values go to `fmt`."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if not isinstance(value, Mapping):
        return fmt(value)
    return ", ".join(f"{key}={option_value(v)}" for key, v in _flat(value))


def option_value(value: Any) -> str:
    """One option's value as a suite file writes it: text bare, ``true``, ``[1, 2]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, list, tuple)) or value is None:
        return json.dumps(value, default=str)
    return str(value)


def _flat(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def add_columns(table: Table, titles: Iterable[str], text: Iterable[str] = ()) -> None:
    """Add a column per title: those named in ``text`` (names, options) fold onto more lines
    when the table is too wide; the others hold figures, kept whole on one line (rich
    shrinks the text columns first)."""
    folded = set(text)
    for title in titles:
        if title in folded:
            table.add_column(title, overflow="fold")
        else:
            table.add_column(title, no_wrap=True)
