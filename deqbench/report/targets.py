"""Time to a target in the tables and warnings of a training report: a run that never reached
its target says so, and over seed repeats each configuration shows how many of its runs
reached it and the median and range of their time and steps to it (the runs that reached it;
a mean would hide the ones that did not). The figures: `deqbench.runs.train.target`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from deqbench.report.display import fmt
from deqbench.report.noise import _group_ids

#: Seeds-table columns: title → row key (the figures shown as median (min–max)).
SEEDS_COLUMNS = {"reached": "target_reached", "to target s": "time_to_target_s"}
SEEDS_COLUMNS |= {"steps to target": "steps_to_target"}
SEEDS_NOTE = "to target: median (min–max) of the runs that reached it"
_LABELS = {"eval_top1": "top-1", "eval_miou": "mIoU"}


def reached(value: Any) -> bool | None:
    """A ``target_reached`` cell as a bool (written as a bool, read back from a CSV as a bool or
    its text); None: the run had no target."""
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def label(row: Mapping[str, Any]) -> str:
    """A row's target as text: ``top-1 ≥ 90 %``."""
    metric = row.get("target_metric")
    return f"{_LABELS.get(metric, metric)} ≥ {fmt(row.get('target_value'))} %"


def row_cells(row: Mapping[str, Any]) -> dict[str, str]:
    """The per-run table's target cell: ``not reached`` for a run that never reached it."""
    if reached(row.get("target_reached")) is False:
        return {"time_to_target_s": "not reached"}
    return {}


def seeds_cells(frame: pd.DataFrame, keys: Sequence[str]) -> dict[str, list[str]]:
    """Per configuration (in `deqbench.report.noise.seed_groups`'s order): ``reached`` (``3/5``:
    runs that reached their target, of the runs, any status) and the median (min–max) of the
    time and steps to it over the runs that reached it. Empty when no run had a target."""
    if "target_reached" not in frame:
        return {}
    flags = frame["target_reached"].map(reached)
    if flags.isna().all():
        return {}
    ids = _group_ids(frame, keys)
    out: dict[str, list[str]] = {title: [] for title in SEEDS_COLUMNS}
    for gid in sorted(ids.unique()):
        member = ids == gid
        hit = member & flags.map(lambda flag: flag is True)
        known = int(flags[member].notna().sum())
        out["reached"].append(f"{int(hit.sum())}/{known}" if known else "–")
        for title, column in list(SEEDS_COLUMNS.items())[1:]:
            values = pd.to_numeric(frame.loc[hit, column], errors="coerce").dropna().tolist()
            out[title].append(_median_range(values, steps=column == "steps_to_target"))
    return out


def _median_range(values: list[float], *, steps: bool) -> str:
    """``median (min–max)``; the value alone for one; ``–`` for none."""
    if not values:
        return "–"
    show = (lambda v: f"{v:.0f}") if steps else fmt
    median = show(float(pd.Series(values).median()))
    if len(values) == 1:
        return median
    return f"{median} ({show(float(min(values)))}–{show(float(max(values)))})"


def missed(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A warning line for the runs that had a target and never reached it (none: no line)."""
    with_target = [r for r in rows if reached(r.get("target_reached")) is not None]
    missing = [r for r in with_target if not reached(r.get("target_reached"))]
    if not missing:
        return []
    runs = ", ".join(str(r.get("run")) for r in missing)
    targets = sorted({label(r) for r in missing})
    return [
        f"{len(missing)} of {len(with_target)} runs never reached their target "
        f"({', '.join(targets)}): run{'s' if len(missing) > 1 else ''} {runs}"
    ]
