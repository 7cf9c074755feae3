"""How plotted runs look and where axes end.

Styles: a colour from the ten of matplotlib's default cycle, changing fastest, with a line style
and a marker that both change every ten entries, so no two of the first 360 look alike. Axis
limits: never a degenerate range (a flat series gets a padded window), accuracy kept in
[0, 100] %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from cycler import cycler

COLOURS = [f"C{i}" for i in range(10)]
LINESTYLES = ["-", "--", "-.", ":"]
#: Nine markers: with four line styles (9 and 4 coprime) every tenth entry changes both.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", "h"]
#: Dash patterns of horizontal baselines (no markers: a baseline has no x to mark).
BASELINE_DASHES = ["--", "-.", ":", (0, (8, 2, 1, 2))]


@dataclass(frozen=True)
class Style:
    """How one run (or configuration) is drawn."""

    color: str
    linestyle: str
    marker: str

    def line(self) -> dict:
        """Keywords of ``Axes.plot``; markers spaced along long lines."""
        line = {"color": self.color, "ls": self.linestyle, "marker": self.marker}
        return line | {"markevery": 0.1, "clip_on": False}  # unclipped: a marker on a limit

    def point(self) -> dict:
        """Keywords of ``Axes.scatter``."""
        return {"c": self.color, "marker": self.marker, "clip_on": False}


_CYCLE = (
    cycler(linestyle=LINESTYLES * len(MARKERS)) + cycler(marker=MARKERS * len(LINESTYLES))
) * cycler(color=COLOURS)


def styles(count: int) -> list[Style]:
    """``count`` styles, pairwise distinct up to 360 (then repeating)."""
    cycle = list(_CYCLE)
    return [Style(**cycle[i % len(cycle)]) for i in range(count)]


def baseline_style(index: int) -> dict:
    """Keywords of ``Axes.axhline`` for the ``index``-th baseline: distinct up to 40."""
    dash = BASELINE_DASHES[(index // len(COLOURS)) % len(BASELINE_DASHES)]
    return {"color": COLOURS[index % len(COLOURS)], "ls": dash, "lw": 1.5}


def padded_limits(
    values: Iterable[float],
    min_span: float,
    pad: float = 0.08,
    floor: float | None = None,
    ceiling: float | None = None,
) -> tuple[float, float]:
    """Limits around the finite ``values``: ``pad`` of their span each side, widened to at
    least ``min_span`` and kept within ``[floor, ceiling]``; (0, 1) without a finite value."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return (0.0, 1.0)
    low, high = min(finite), max(finite)
    margin = max((high - low) * pad, (min_span - (high - low)) / 2)
    low, high = low - margin, high + margin
    if floor is not None and low < floor:
        low, high = floor, max(high, floor + min_span)
    if ceiling is not None and high > ceiling:
        low, high = min(low, ceiling - min_span), ceiling
        low = low if floor is None else max(low, floor)
    return (low, high)


def percent_limits(values: Iterable[float]) -> tuple[float, float]:
    """Accuracy axis limits in %: the data padded, at least 10 points wide, within [0, 100]."""
    return padded_limits(values, min_span=10.0, floor=0.0, ceiling=100.0)


def magnitude_limits(values: Iterable[float]) -> tuple[float, float]:
    """Limits for a free-ranging figure (a loss, a time): at least 10 % of its magnitude wide."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    scale = max((abs(v) for v in values), default=1.0) or 1.0
    return padded_limits(values, min_span=0.1 * scale)


def step_limits(values: Iterable[float]) -> tuple[float, float]:
    """Limits of a step or iteration axis: at least one step wide."""
    return padded_limits(values, min_span=1.0, pad=0.05)


def log_limits(values: Iterable[float]) -> tuple[float, float]:
    """Limits of a log axis around the positive ``values``: at least a factor of 10 wide."""
    positive = [float(v) for v in values if v is not None and 0 < float(v) < math.inf]
    if not positive:
        return (0.1, 1.0)
    low, high = math.log10(min(positive)), math.log10(max(positive))
    low, high = padded_limits([low, high], min_span=1.0, pad=0.05)
    return (10**low, 10**high)
