"""Comparing reports run by run: ratios B / A for costs, differences in points for accuracy.

Two reports: rows are matched one to one on what defines a run (the identity columns of the
report's kind, solve or training). Where those collide inside a report, the comparison keys on
what tells the rows apart (the run index last) or refuses. One report with ``--pair A:B``: two
solvers measured side by side in the same suite are matched on everything else. Rendering to
rich, markdown and CSV lives in `deqbench.report.compare_render`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from deqbench.errors import ConfigError
from deqbench.plugins import get_run_kind
from deqbench.report.matching import keyed, match_keys, report_kind
from deqbench.report.noise import has_repeats, seed_groups, within_noise
from deqbench.report.schema import Metric, RunStatus

#: Status ranks: a higher rank on side B is worse. Unknown statuses count as failures.
_RANK = {RunStatus.COMPLETED: 0, RunStatus.CONVERGED: 0, RunStatus.MAX_ITER: 1}
_FAILED_RANK = 2


@dataclass
class Comparison:
    """The outcome of comparing B against A."""

    kind: str  #: the name of the reports' kind of run
    keys: list[str]  #: the identity columns the rows were matched on
    metrics: list[Metric]  #: the metrics both sides have
    table: pd.DataFrame  #: one row per matched run: keys, statuses, a/b/ratio-or-diff, marks
    only_a: pd.DataFrame = field(default_factory=pd.DataFrame)  #: runs only in A
    only_b: pd.DataFrame = field(default_factory=pd.DataFrame)  #: runs only in B
    notes: list[str] = field(default_factory=list)  #: how rows were matched, meta warnings
    names: tuple[str, str] = ("a", "b")  #: the two sides, as the user named them
    seeds: bool = False  #: rows are configurations compared by their seed means (``n_a``…)

    @property
    def regressions(self) -> int:
        """Matched runs with at least one mark of getting worse (a metric or the status)."""
        return int((self.table["worse"] != "").sum()) if len(self.table) else 0

    @property
    def within_noise(self) -> int:
        """Matched runs with at least one accuracy difference within noise (never worse)."""
        return int((self.table["noise"] != "").sum()) if len(self.table) else 0

    def frame(self) -> pd.DataFrame:
        """Everything as one CSV-ready frame: matched rows, then the one-sided ones."""
        parts = [self.table.assign(side="both")]
        for side, rows in (("a", self.only_a), ("b", self.only_b)):
            if len(rows):
                status = rows.rename(columns={"status": f"status_{side}"})
                parts.append(status.assign(side=f"only {side}"))
        return pd.concat(parts, ignore_index=True)


def _status_change(a: object, b: object) -> str:
    ra, rb = (_RANK.get(str(s), _FAILED_RANK) for s in (a, b))
    if rb > ra:
        return "newly failed" if rb == _FAILED_RANK else "no longer converges"
    if rb < ra:
        return "fixed" if ra == _FAILED_RANK else "now converges"
    return ""


def _worse(metric: Metric, value: float, factor: float, drop: float) -> bool:
    if math.isnan(value):
        return False
    if metric.points:
        return value < -drop * (1 + 1e-9)
    if metric.higher_is_better:
        return value * factor < 1 - 1e-9
    return value > factor * (1 + 1e-9)


def _metrics(frame: pd.DataFrame, catalogue: Sequence[Metric]) -> list[Metric]:
    out = []
    for m in catalogue:
        a, b = f"{m.name}_a", f"{m.name}_b"
        if a in frame and b in frame and frame[a].notna().any() and frame[b].notna().any():
            out.append(m)
    return out


def _side(frame: pd.DataFrame, keys: Sequence[str], suffix: str) -> pd.DataFrame:
    rest = [c for c in frame.columns if c not in keys]
    return frame[list(keys)].join(frame[rest].add_suffix(suffix))


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


#: Columns beside a figure that hold its uncertainty (`deqbench.report.noise.intervals`).
_SPREAD = ("_ci_low", "_ci_high", "_sd", "_n")


def _view(row: pd.Series, name: str, side: str) -> dict[str, object]:
    """One side's figure ``name`` and its uncertainty columns, from a joined row."""
    return {name + s: row.get(f"{name}{s}_{side}") for s in ("", *_SPREAD)}


def _noisy(joined: pd.DataFrame, name: str, diff: pd.Series) -> list[bool]:
    """Per row: a non-zero difference of accuracy ``name`` that is within noise."""
    return [
        math.isfinite(d) and d != 0 and within_noise(_view(r, name, "a"), _view(r, name, "b"), name)
        for d, (_, r) in zip(diff.astype(float), joined.iterrows(), strict=True)
    ]


def _assemble(
    joined: pd.DataFrame,
    keys: Sequence[str],
    catalogue: Sequence[Metric],
    factor: float,
    drop: float,
) -> tuple[pd.DataFrame, list[Metric]]:
    metrics = _metrics(joined, catalogue)
    out = joined[list(keys)].copy()
    out["status_a"], out["status_b"] = joined["status_a"], joined["status_b"]
    if "n_a" in joined and "n_b" in joined:  # configurations: completed seeds per side
        out["n_a"], out["n_b"] = joined["n_a"], joined["n_b"]
    out["change"] = [_status_change(a, b) for a, b in zip(out.status_a, out.status_b, strict=True)]
    worse = [[c] if c in ("newly failed", "no longer converges") else [] for c in out.change]
    noise: list[list[str]] = [[] for _ in range(len(out))]
    for m in metrics:
        a, b = _numeric(joined[f"{m.name}_a"]), _numeric(joined[f"{m.name}_b"])
        out[f"{m.name}_a"], out[f"{m.name}_b"] = a, b
        for spread in (f"{m.name}_sd_a", f"{m.name}_sd_b"):
            if spread in joined:
                out[spread] = _numeric(joined[spread])
        col = f"{m.name}_diff" if m.points else f"{m.name}_ratio"
        out[col] = b - a if m.points else b / a.where(a != 0)
        if m.points:  # accuracy: a difference within noise is no regression, however large
            for i, flag in enumerate(_noisy(joined, m.name, out[col])):
                if flag:
                    noise[i].append(m.name)
        if m.marked:
            for i, value in enumerate(out[col]):
                if m.name not in noise[i] and _worse(m, float(value), factor, drop):
                    worse[i].append(m.name)
    out["worse"] = [";".join(w) for w in worse]
    out["noise"] = [";".join(n) for n in noise]
    return out.reset_index(drop=True), metrics


def seed_means(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """A report with one row per configuration (runs that differ only in seed):
    `deqbench.report.noise.seed_groups` of every compared figure of its ``kind`` (mean,
    ``_sd``, ``_n``; Wilson interval of the mean accuracy)."""
    spec = get_run_kind(kind)
    figures = [m.name for m in spec.metrics] + ["eval_count"]
    return seed_groups(frame, list(spec.keys), figures).assign(kind=kind)


def _seeded(kind: str, each_seed: bool) -> bool:
    """Whether reports of ``kind`` may be compared on seed means (its runs carry a seed)."""
    return not each_seed and "seed" in get_run_kind(kind).keys


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    names: tuple[str, str] = ("a", "b"),
    factor: float = 1.1,
    drop: float = 1.0,
    each_seed: bool = False,
) -> Comparison:
    """Match the runs of ``a`` and ``b`` one to one and compare each metric, B against A.

    ``factor`` marks a cost ratio beyond it (or a throughput below its inverse) as worse;
    ``drop`` marks an accuracy drop of more than that many points as worse, unless it is
    within noise (`deqbench.report.noise.within_noise`: listed in the ``noise`` column instead).
    Training reports that both repeat runs with several seeds are compared configuration by
    configuration, on seed means (`seed_means`), unless ``each_seed``.
    """
    kind, other = report_kind(a, names[0]), report_kind(b, names[1])
    if kind != other:
        titles = (get_run_kind(kind).title, get_run_kind(other).title)
        raise ConfigError(
            f"{names[0]} and {names[1]}: one is a {titles[0]} report, the other a {titles[1]} one"
        )
    spec = get_run_kind(kind)
    base, catalogue = list(spec.keys), spec.metrics
    seeds, notes = False, []
    if _seeded(kind, each_seed):
        repeated = [has_repeats(frame, base) for frame in (a, b)]
        if all(repeated):
            seeds, base = True, [k for k in base if k != "seed"]
            a, b = seed_means(a, kind), seed_means(b, kind)
        elif any(repeated):
            one = names[repeated.index(True)]
            notes.append(f"only {one} repeats runs with several seeds: matched seed by seed")
    keys, matched = match_keys(list(zip(names, (a, b), strict=True)), base, spec.tiebreakers)
    out = _compare_on(a, b, keys, catalogue, factor, drop)
    out.kind, out.notes, out.names, out.seeds = kind, notes + matched, names, seeds
    return out


def compare_reports(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``a`` and ``b`` matched one to one, with each metric's ``b / a`` ratio."""
    return compare(a, b).table


def compare_pairs(
    report: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    name: str = "report",
    factor: float = 1.1,
    drop: float = 1.0,
    each_seed: bool = False,
) -> Comparison:
    """For each ``(a, b)`` pair of solvers in one report, B against A on otherwise equal runs
    (on seed means when the training report repeats runs with several seeds, as `compare`)."""
    kind = report_kind(report, name)
    spec = get_run_kind(kind)
    base, catalogue = list(spec.keys), spec.metrics
    seeds = _seeded(kind, each_seed) and has_repeats(report, base)
    if seeds:
        report = seed_means(report, kind)
    base = [k for k in base if k not in ("solver", "solver_options", *(["seed"] if seeds else []))]
    parts, only_a, only_b, keys, notes = [], [], [], base, []
    metrics: dict[str, Metric] = {}
    solvers = set(report["solver"].dropna().astype(str))
    for sa, sb in pairs:
        for solver in (sa, sb):
            if solver not in solvers:
                raise ConfigError(f"--pair {sa}:{sb}: solver {solver!r} is not in this report")
        side_a = report[report["solver"].astype(str) == sa]
        side_b = report[report["solver"].astype(str) == sb]
        # No tiebreakers: the run index and the options JSON differ between two solvers.
        label = (f"{name} solver {sa}", f"{name} solver {sb}")
        keys, notes = match_keys(list(zip(label, (side_a, side_b), strict=True)), base, [])
        cmp_ = _compare_on(side_a, side_b, keys, catalogue, factor, drop)
        cmp_.table.insert(0, "solver", f"{sb} / {sa}")
        parts.append(cmp_.table)
        only_a.append(cmp_.only_a.assign(solver=sa))
        only_b.append(cmp_.only_b.assign(solver=sb))
        metrics.update({m.name: m for m in cmp_.metrics})
    return Comparison(
        kind=kind,
        keys=["solver", *keys],
        metrics=[m for m in catalogue if m.name in metrics],
        table=pd.concat(parts, ignore_index=True),
        only_a=pd.concat(only_a, ignore_index=True),
        only_b=pd.concat(only_b, ignore_index=True),
        notes=notes,
        names=(f"{name} (A side)", f"{name} (B side)"),
        seeds=seeds,
    )


def _compare_on(
    a: pd.DataFrame,
    b: pd.DataFrame,
    keys: list[str],
    catalogue: Sequence[Metric],
    factor: float,
    drop: float,
) -> Comparison:
    """Compare ``a`` and ``b`` on ``keys`` (already unique on both sides)."""
    ka, kb = keyed(a, keys), keyed(b, keys)
    joined = _side(ka, keys, "_a").merge(_side(kb, keys, "_b"), on=keys, how="inner")
    table, metrics = _assemble(joined, keys, catalogue, factor, drop)
    ia, ib = ka.set_index(keys).index, kb.set_index(keys).index
    keep = [*keys, "status"]
    return Comparison(
        kind="",
        keys=keys,
        metrics=metrics,
        table=table,
        only_a=ka[~ia.isin(ib)][keep].reset_index(drop=True),
        only_b=kb[~ib.isin(ia)][keep].reset_index(drop=True),
    )


def compare_solvers(report: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """For each ``(a, b)`` pair of solvers in one report, ``b / a`` on otherwise equal runs."""
    return compare_pairs(report, pairs).table


def parse_pair(text: str) -> tuple[str, str]:
    """``"A:B"`` → ``("A", "B")``."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise ConfigError(f"--pair {text!r}: expected A:B, e.g. torchdeq-anderson:anderson")
    return a, b
