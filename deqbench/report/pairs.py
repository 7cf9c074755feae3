"""The axis of ``deqbench compare REPORT --pair KEY=A:B``: which run key the pair names, and
the two sides of one report along it, stripped of that key so they match on everything else.

A key is an identity column of the report's kind (``model``, ``solver``, ``gradient``,
``f_tol``…), an entry of one of its JSON columns as ``COLUMN.ENTRY`` (``solver_options.m``),
or an entry of a training run's ``options`` (the swept matrix keys, e.g. ``recipe.lr``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from deqbench.errors import ConfigError, did_you_mean
from deqbench.report.matching import canon

#: The pair key of a plain ``--pair A:B``.
DEFAULT_KEY = "solver"
#: The JSON column of a training run's swept keys; a tiebreaker, not an identity column.
OPTIONS = "options"


def parse_pair(text: str) -> tuple[str, str, str]:
    """``"KEY=A:B"`` → ``(KEY, A, B)``; a plain ``"A:B"`` pairs solvers."""
    key, eq, values = text.partition("=")
    if not eq:
        key, values = DEFAULT_KEY, text
    a, sep, b = values.partition(":")
    if not key or not sep or not a or not b:
        raise ConfigError(
            f"--pair {text!r}: expected [KEY=]A:B, e.g. gradient=ift:jfb (B / A), or "
            "anderson:broyden for solvers"
        )
    return key, a, b


def _entries(value: object) -> dict[str, Any]:
    """The entries of a JSON object cell; {} for anything else."""
    if not isinstance(value, str) or not value.startswith("{"):
        return {}
    try:
        out = json.loads(value)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _json_columns(frame: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    return [c for c in [*keys, OPTIONS] if c in frame and frame[c].map(_entries).map(bool).any()]


@dataclass(frozen=True)
class Axis:
    """What ``--pair KEY=…`` names in one report."""

    key: str  #: as the user wrote it
    column: str  #: the identity column, or the JSON column that holds the entry
    entry: str | None = None  #: the entry inside ``column``'s JSON; None for a column

    def values(self, frame: pd.DataFrame) -> pd.Series:
        """Each row's value on this axis, as `canon` text ("" where it has none)."""
        if self.entry is None:
            return frame[self.column].map(canon)
        return frame[self.column].map(lambda v: canon(_entries(v).get(self.entry)))

    def names(self, entry: str) -> bool:
        """Whether a swept option (an ``options`` entry) sets this axis: ``deq.solver`` sets
        ``solver``, ``model.name`` sets ``model``."""
        key = self.entry if self.column == OPTIONS else self.key
        return entry == key or entry.endswith("." + key) or entry == key + ".name"

    def others(self, keys: Sequence[str]) -> list[str]:
        """The identity columns the two sides match on: all but this axis's column, and its
        options with it (``solver_options`` when pairing solvers)."""
        if self.entry is not None:
            return list(keys)
        return [k for k in keys if k not in (self.column, f"{self.column}_options")]

    def strip(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` without this axis: its entry dropped from the JSON column that holds it,
        and from ``options``, so the two sides match on everything else."""
        out = frame.copy()
        if self.entry is not None and self.column != OPTIONS:
            out[self.column] = frame[self.column].map(lambda v: _without(v, {self.entry}))
        if OPTIONS in frame:
            out[OPTIONS] = frame[OPTIONS].map(
                lambda v: _without(v, {e for e in _entries(v) if self.names(e)})
            )
        return out


def _without(value: object, drop: set[str | None]) -> object:
    entries = _entries(value)
    if not entries or not drop & set(entries):
        return value
    return json.dumps({k: v for k, v in entries.items() if k not in drop}, sort_keys=True)


def pair_keys(frame: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Every key ``--pair`` may name in ``frame``: identity columns, ``COLUMN.ENTRY`` of JSON
    ones, and ``options`` entries."""
    out = [k for k in keys if k in frame]
    for column in _json_columns(frame, keys):
        entries = sorted({e for v in frame[column] for e in _entries(v)})
        out += entries if column == OPTIONS else [f"{column}.{e}" for e in entries]
    return out


def pair_axis(frame: pd.DataFrame, key: str, keys: Sequence[str], name: str) -> Axis:
    """The `Axis` that ``key`` names in report ``frame`` (identity columns ``keys``);
    a `ConfigError` with "did you mean" when it names none."""
    if key in keys and key in frame:
        return Axis(key, key)
    for column in _json_columns(frame, keys):
        prefix = column + "."
        entry = key[len(prefix) :] if key.startswith(prefix) else key if column == OPTIONS else ""
        if entry and frame[column].map(lambda v, e=entry: e in _entries(v)).any():
            return Axis(key, column, entry)
    raise ConfigError(
        f"{name}: --pair: {key!r} is not a run key of this report (expected an identity "
        "column, COLUMN.ENTRY of a JSON one, or a swept option)"
        + did_you_mean(key, pair_keys(frame, keys))
    )


def pair_value(values: pd.Series, text: str, axis: Axis, name: str) -> str:
    """The value of ``axis`` in the report that ``text`` names (``1e-3`` names 0.001); a
    `ConfigError` with "did you mean" when no row has it."""
    present = set(values) - {""}
    if text in present:
        return text
    try:
        number = canon(float(text))
    except ValueError:
        number = None
    if number in present:
        return number
    raise ConfigError(
        f"{name}: --pair: {axis.key} {text!r} is not in this report" + did_you_mean(text, present)
    )
