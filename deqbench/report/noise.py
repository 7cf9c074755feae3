"""Telling a difference from noise: Wilson intervals of accuracies, and seed means and spreads.

An accuracy measured on ``n`` evaluation images is a binomial proportion: its 95 % Wilson score
interval says where the accuracy of the same model on another ``n`` images would likely fall.
Runs repeated with several seeds (``[suite] repeats``) give each configuration a mean and a
standard deviation; the t interval of the mean says how well ``n`` seeds pin it down. Two
figures whose intervals overlap cannot be told apart by these measurements (`overlap`): the
summary table and ``deqbench compare`` say so instead of ranking them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import pandas as pd

from deqbench.report.results import noisy_figures
from deqbench.report.schema import RunStatus

#: Two-sided 95 % normal quantile, 1.959963984540054.
Z95 = NormalDist().inv_cdf(0.975)
#: The accuracies with a binomial interval: each image is right or wrong, independently.
#: Pixel accuracy is left out on purpose: the pixels of one image are far from independent (a
#: missed object is thousands of wrong pixels), so a pixel-count interval would be falsely
#: narrow; mIoU is a mean of per-class ratios, not a proportion. Their noise shows in seeds.
BINOMIAL = ("eval_top1", "eval_top5")
#: Option keys that are not part of a configuration (sweeping the suite seed repeats a run).
_SEED_OPTIONS = ("suite.seed",)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``successes / n``, as fractions in [0, 1]
    (95 % for the default ``z``). ``successes`` may be fractional (a mean accuracy × n)."""
    if n < 1:
        raise ValueError(f"wilson_interval: n = {n}; an interval needs at least one sample")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: {successes} successes out of {n}")
    p, z2 = successes / n, z * z / n
    centre = (p + z2 / 2) / (1 + z2)
    half = z / (1 + z2) * math.sqrt(p * (1 - p) / n + z2 / (4 * n))
    # At 0 or n successes the bound is exactly 0 or 1; rounding must not move it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def percent_interval(percent: float, n: int) -> tuple[float, float]:
    """`wilson_interval` of an accuracy given in percent over ``n`` samples, in percent."""
    successes = min(max(percent / 100 * n, 0.0), float(n))  # 100 % × n may round past n
    low, high = wilson_interval(successes, n)
    return 100 * low, 100 * high


def mean_interval(mean: float, sd: float, n: int) -> tuple[float, float] | None:
    """The 95 % Student t interval of a mean of ``n`` seeds with sample SD ``sd``; None below
    two seeds or without a finite SD (one seed says nothing about the spread)."""
    if n < 2 or not math.isfinite(sd) or not math.isfinite(mean):
        return None
    from scipy.special import stdtrit  # here: scipy takes a second to import

    half = float(stdtrit(n - 1, 0.975)) * sd / math.sqrt(n)
    return mean - half, mean + half


def overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals share a point (False when either is missing)."""
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def intervals(row: Mapping[str, Any], figure: str) -> dict[str, tuple[float, float]]:
    """The 95 % intervals of ``figure`` in a report row or a `seed_groups` row: ``wilson``
    from its ``_ci_low``/``_ci_high`` columns, ``seeds`` (`mean_interval`) from its
    ``_sd``/``_n`` columns; an interval the row lacks is absent."""
    out = {}
    low, high = _number(row.get(f"{figure}_ci_low")), _number(row.get(f"{figure}_ci_high"))
    if math.isfinite(low) and math.isfinite(high):
        out["wilson"] = (low, high)
    n = _number(row.get(f"{figure}_n"))
    if math.isfinite(n):
        seeds = mean_interval(_number(row.get(figure)), _number(row.get(f"{figure}_sd")), int(n))
        if seeds is not None:
            out["seeds"] = seeds
    return out


def within_noise(a: Mapping[str, Any], b: Mapping[str, Any], figure: str) -> bool:
    """Whether ``figure`` differs between rows ``a`` and ``b`` by no more than noise: their
    Wilson intervals overlap (evaluation-set noise), or both are seed means and their t
    intervals overlap (training noise). False when neither pair of intervals exists."""
    ia, ib = intervals(a, figure), intervals(b, figure)
    return any(overlap(ia.get(kind), ib.get(kind)) for kind in ("wilson", "seeds"))


def tied_with_best(rows: Sequence[Mapping[str, Any]], figure: str) -> list[bool]:
    """For each row: whether its ``figure`` is below the highest one by no more than noise
    (`within_noise`); the best row itself and rows without the figure are False."""
    values = [_number(row.get(figure)) for row in rows]
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if len(finite) < 2:
        return [False] * len(rows)
    best = max(finite, key=lambda i: values[i])
    return [
        i in finite and i != best and within_noise(rows[i], rows[best], figure)
        for i in range(len(rows))
    ]


def flagged_noisy(row: Mapping[str, Any]) -> set[str]:
    """The figures of a report row (or a `seed_groups` row) that its run flagged noisy: its
    ``noisy`` column, else `deqbench.report.results.noisy_figures` of its IQRs (training rows
    record no such column). A noisy bare loop makes the overhead ratio noisy too, and a noisy
    overhead the solve's cost in f-evaluations (NFE × that ratio)."""
    listed = row.get("noisy")
    noisy = set((listed if isinstance(listed, str) else noisy_figures(row)).split())
    if "bare_ms_median" in noisy:  # the ratio's denominator
        noisy.add("overhead_per_nfe")
    if "overhead_per_nfe" in noisy:
        noisy.add("solve_cost_f_evals")
    return noisy


def _config_options(value: object) -> str | None:
    """A run's options (JSON) without the seed, key order canonical; None when empty."""
    if not isinstance(value, str) or not value.startswith("{"):
        return value if isinstance(value, str) and value else None
    try:
        options = json.loads(value)
    except ValueError:
        return value
    return json.dumps({k: v for k, v in options.items() if k not in _SEED_OPTIONS}, sort_keys=True)


def _group_ids(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Configuration index of each row: rows equal on ``keys`` and on their options bar the
    seed are one configuration, numbered in order of first appearance."""
    columns = [k for k in keys if k in frame and k != "seed"]
    parts = [frame[k].map(lambda v: "" if pd.isna(v) else str(v)) for k in columns]
    if "options" in frame:
        parts.append(frame["options"].map(lambda v: _config_options(v) or ""))
    if not parts:
        return pd.Series(0, index=frame.index)
    label = pd.concat(parts, axis=1).agg("\x1f".join, axis=1)
    return pd.Series(pd.factorize(label)[0], index=frame.index)


def has_repeats(frame: pd.DataFrame, keys: Sequence[str]) -> bool:
    """Whether some configuration of the training report ``frame`` ran with several seeds
    (rows equal in seed too are a duplicate, not a repeat)."""
    if len(frame) == 0 or "seed" not in frame:
        return False
    seeds = frame["seed"].groupby(_group_ids(frame, keys)).nunique()
    return bool((seeds > 1).any())


def seed_groups(
    frame: pd.DataFrame, keys: Sequence[str], figures: Sequence[str], noisy: bool = False
) -> pd.DataFrame:
    """One row per configuration of a training report (runs equal on ``keys`` and on their
    options, the seed aside), in order of first appearance. With ``noisy``, its ``noisy``
    column lists the figures that any of its completed runs flagged (`flagged_noisy`).

    Each row holds the configuration's ``keys`` and ``options`` (without ``suite.seed``),
    ``status`` (``completed``, or the first other status among its runs), ``runs``, ``n``
    (completed runs), ``seeds`` (space-separated), and for each of ``figures`` in ``frame``:
    its mean over the completed runs with a value, ``<figure>_sd`` (sample standard deviation,
    NaN below two values) and ``<figure>_n`` (values behind the mean). For the `BINOMIAL`
    accuracies with an ``eval_count``, ``<figure>_ci_low``/``_ci_high`` are the Wilson
    interval of the mean over that count (the seeds share one evaluation set).
    """
    ids = _group_ids(frame, keys)
    done_text = str(RunStatus.COMPLETED)
    status = frame["status"].astype(str) if "status" in frame else pd.Series(done_text, ids.index)
    done = status == done_text
    figures = [f for f in figures if f in frame]
    out = []
    for gid in sorted(ids.unique()):
        member = ids == gid
        rows, first = frame[member], frame[member].iloc[0]
        row: dict[str, object] = {k: first[k] for k in keys if k in frame and k != "seed"}
        if "options" in frame:
            row["options"] = _config_options(first["options"])
        row["status"] = next((s for s in status[member] if s != done_text), done_text)
        row["runs"], row["n"] = len(rows), int(done[member].sum())
        if "seed" in frame:
            seeds = pd.to_numeric(rows["seed"], errors="coerce").dropna()
            row["seeds"] = " ".join(str(int(s)) for s in seeds)
        for figure in figures:
            values = pd.to_numeric(rows.loc[done[member], figure], errors="coerce").dropna()
            row[figure] = float(values.mean()) if len(values) else math.nan
            row[f"{figure}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{figure}_n"] = len(values)
        if noisy:  # a mean over seeds is as untrustworthy as its noisiest seed
            flags = set().union(*map(flagged_noisy, rows[done[member]].to_dict("records")))
            row["noisy"] = " ".join(sorted(flags))
        out.append(row)
    groups = pd.DataFrame(out)
    if "eval_count" in groups:
        for figure in (f for f in BINOMIAL if f in groups):
            bounds = [
                percent_interval(acc, int(count))
                if math.isfinite(acc) and math.isfinite(count) and count >= 1
                else (math.nan, math.nan)
                for acc, count in zip(groups[figure], groups["eval_count"], strict=True)
            ]
            groups[f"{figure}_ci_low"] = [lo for lo, _ in bounds]
            groups[f"{figure}_ci_high"] = [hi for _, hi in bounds]
    return groups
