"""Whether a training run reproduced its published figure (the suite's ``[reference]`` table,
docs/reference-results.md), and how the tables show it.

A row carries the figure it is checked against (``reference_metric``, ``reference_value``,
``reference_band``, ``reference_source``) and the verdict, ``reproduced``: ``yes`` when the
run completed and its final evaluation's metric is within the band of the published figure
(|measured − published| ≤ band, in points); ``no`` when it is outside, or the run failed;
``n/a`` when the run has no figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from deqbench.report.schema import RunStatus, finite_number

YES, NO, NA = "yes", "no", "n/a"
#: A table cell's mark per verdict.
MARKS = {YES: "yes ✓", NO: "no ✗", NA: "n/a"}
_LABELS = {"eval_top1": "top-1", "eval_top5": "top-5", "eval_miou": "mIoU"}


def _shown(value: float | None) -> str:
    """A figure as published, every digit kept (93.51, not 93.5)."""
    return "–" if value is None else f"{value:g}"


def has_figure(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` names a published figure to be checked against."""
    metric = row.get("reference_metric")
    return isinstance(metric, str) and metric != ""


def reproduced(row: Mapping[str, Any]) -> str:
    """``yes``, ``no`` or ``n/a`` for a row with its reference columns, its status and its
    final evaluation's figures (a row as a run builds it, or as read back from a report).
    The band's edge counts as inside, whatever the float rounding of the difference."""
    if not has_figure(row):
        return NA
    if str(row.get("status")) != RunStatus.COMPLETED:
        return NO
    measured = finite_number(row.get(row["reference_metric"]))
    published = finite_number(row.get("reference_value"))
    band = finite_number(row.get("reference_band"))
    if measured is None or published is None or band is None:
        return NO
    distance = abs(measured - published)
    return YES if distance <= band or math.isclose(distance, band) else NO


def mark(row: Mapping[str, Any]) -> str:
    """The summary table's cell of a row's ``reproduced`` column (``yes ✓``, ``no ✗``,
    ``n/a``); ``–`` for a report written before the column."""
    return MARKS.get(str(row.get("reproduced")), "–")


def judged(verdicts: Iterable[Any]) -> bool:
    """Whether any of these ``reproduced`` cells is a verdict (yes or no), not n/a or empty."""
    return any(str(v) in (YES, NO) for v in verdicts)


def caption(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The legend of the marks: each distinct figure the rows were checked against, e.g.
    ``reproduced: top-1 within 0.5 of 75.4 % (JR paper, Table 2)``; None when none has one."""
    seen: dict[str, None] = {}
    for row in rows:
        if has_figure(row):
            metric, source = row["reference_metric"], row.get("reference_source")
            band = finite_number(row.get("reference_band"))
            value = finite_number(row.get("reference_value"))
            where = f" ({source})" if isinstance(source, str) and source else ""
            label = _LABELS.get(metric, metric)
            seen[f"{label} within {_shown(band)} of {_shown(value)} %{where}"] = None
    return "reproduced: " + "; ".join(seen) if seen else None
