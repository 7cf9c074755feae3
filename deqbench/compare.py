"""Comparing reports run by run, as ratios (never absolute times from different machines).

Two reports: rows are matched on what defines a run (problem, solver, options, caps, device…)
and each metric becomes ``b / a``. One report: pairs of solvers measured side by side in the same
suite (say ``anderson`` against ``torchdeq-anderson``) are matched on everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from deqbench.errors import ConfigError

#: Columns that identify a run; two rows with equal keys measured the same thing.
KEYS = [
    "problem",
    "cell",
    "batch_size",
    "solver",
    "solver_options",
    "max_iter",
    "tol",
    "stop_mode",
    "gradient",
    "gradient_options",
    "dtype",
]
#: Metrics compared as ratios, when both sides have them.
METRICS = [
    "nfe",
    "solve_ms_median",
    "solve_cost_f_evals",
    "overhead_per_nfe",
    "solver_mem_mb",
    "rel_residual_max",
    "backward_ms_median",
    "step_ms_median",
    "saved_mb",
]


def _metrics(frame: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if m in frame and frame[m].notna().any()]


def _ratios(joined: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    out = joined[list(keys)].copy()
    for m in metrics:
        out[f"{m}_a"] = joined[f"{m}_a"]
        out[f"{m}_b"] = joined[f"{m}_b"]
        out[f"{m}_ratio"] = joined[f"{m}_b"] / joined[f"{m}_a"]
    out["status_a"], out["status_b"] = joined["status_a"], joined["status_b"]
    return out


def compare_reports(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``a`` and ``b`` matched on `KEYS`, with each metric's ``b / a`` ratio."""
    keys = [k for k in KEYS if k in a and k in b]
    joined = a.merge(b, on=keys, suffixes=("_a", "_b"))
    return _ratios(joined, keys, _metrics(joined.rename(columns=lambda c: c.removesuffix("_a"))))


def compare_solvers(report: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """For each ``(a, b)`` pair of solvers in one report, ``b / a`` on otherwise equal runs."""
    keys = [k for k in KEYS if k in report and k not in ("solver", "solver_options")]
    parts = []
    for a, b in pairs:
        for name in (a, b):
            if name not in set(report["solver"]):
                raise ConfigError(f"--pair {a}:{b}: solver {name!r} is not in this report")
        joined = report[report.solver == a].merge(
            report[report.solver == b], on=keys, suffixes=("_a", "_b")
        )
        joined["solver"] = f"{b} / {a}"
        parts.append(_ratios(joined, ["solver", *keys], _metrics(report)))
    return pd.concat(parts, ignore_index=True)


def parse_pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise ConfigError(f"--pair {text!r}: expected A:B, e.g. torchdeq-anderson:anderson")
    return a, b
