"""Comparing reports run by run: ratios B / A for costs, differences in points for accuracy.

Two reports: rows are matched one to one on what defines a run (the identity columns of the
report's kind, solve or training). Where those collide inside a report, the comparison keys on
what tells the rows apart (the run index last) or refuses. One report with ``--pair KEY=A:B``:
the runs with value A and B of any run key (`deqbench.report.pairs`; solvers by default) are
matched on everything else. A figure either run flagged noisy is never judged worse, and a
solve that stops at its cap where it converged is newly failed. Rendering to rich, markdown and
CSV lives in `deqbench.report.compare_render`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from deqbench.errors import ConfigError
from deqbench.plugins import get_run_kind
from deqbench.report.matching import keyed, match_keys, report_kind
from deqbench.report.noise import flagged_noisy, has_repeats, seed_groups, within_noise
from deqbench.report.pairs import DEFAULT_KEY, OPTIONS, pair_axis, pair_value
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
    pair: str = ""  #: the run key of ``--pair KEY=A:B`` (its column reads "B / A"), or ""

    @property
    def regressions(self) -> int:
        """Matched runs with at least one mark of getting worse (a metric or the status)."""
        return int((self.table["worse"] != "").sum()) if len(self.table) else 0

    @property
    def within_noise(self) -> int:
        """Matched runs with at least one accuracy difference within noise (never worse)."""
        return int((self.table["noise"] != "").sum()) if len(self.table) else 0

    @property
    def noisy(self) -> int:
        """Compared figures that a run on either side flagged noisy: never judged worse."""
        if not len(self.table):
            return 0
        return sum(len(cell.split(";")) for cell in self.table["noisy"] if cell)

    def frame(self) -> pd.DataFrame:
        """Everything as one CSV-ready frame: matched rows, then the one-sided ones."""
        parts = [self.table.assign(side="both")]
        for side, rows in (("a", self.only_a), ("b", self.only_b)):
            if len(rows):
                status = rows.rename(columns={"status": f"status_{side}"})
                parts.append(status.assign(side=f"only {side}"))
        return pd.concat(parts, ignore_index=True)


def _status_change(a: object, b: object) -> str:
    """``newly failed`` for any step down (converged → max_iter is a solve that stopped at its
    cap: a failure to converge), ``fixed`` when B is fine again."""
    ra, rb = (_RANK.get(str(s), _FAILED_RANK) for s in (a, b))
    if rb > ra:
        return "newly failed"
    return "fixed" if rb < ra and rb == 0 else ""


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
    if "reproduced_a" in joined or "reproduced_b" in joined:  # training: each side's verdict
        out["reproduced_a"], out["reproduced_b"] = (joined.get(f"reproduced_{s}") for s in "ab")
    out["change"] = [_status_change(a, b) for a, b in zip(out.status_a, out.status_b, strict=True)]
    worse = [[c] if c == "newly failed" else [] for c in out.change]
    noise: list[list[str]] = [[] for _ in range(len(out))]
    # Figures either run flagged noisy (`_compare_on` lists them): never judged.
    flagged = [
        set(a.split()) | set(b.split())
        for a, b in zip(joined["noisy_a"], joined["noisy_b"], strict=True)
    ]
    noisy: list[list[str]] = [[] for _ in range(len(out))]
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
        for i, value in enumerate(out[col]):
            if m.name in flagged[i] and math.isfinite(value):
                noisy[i].append(m.name)
            elif m.marked and m.name not in noise[i] and _worse(m, float(value), factor, drop):
                worse[i].append(m.name)
    out["worse"] = [";".join(w) for w in worse]
    out["noise"] = [";".join(n) for n in noise]
    out["noisy"] = [";".join(n) for n in noisy]
    return out.reset_index(drop=True), metrics


def seed_means(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """A report with one row per configuration (runs that differ only in seed):
    `deqbench.report.noise.seed_groups` of every compared figure of its ``kind`` (mean,
    ``_sd``, ``_n``; Wilson interval of the mean accuracy)."""
    spec = get_run_kind(kind)
    figures = [m.name for m in spec.metrics] + ["eval_count"]
    return seed_groups(frame, list(spec.keys), figures, noisy=True).assign(kind=kind)


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
    key: str = DEFAULT_KEY,
) -> Comparison:
    """For each ``(a, b)`` pair of values of the run key ``key`` in one report (a column, a
    JSON entry or a swept option: `deqbench.report.pairs`), B against A on the runs equal in
    every other key (on seed means when the training report repeats runs with several seeds,
    as `compare`). The ``key`` column of the table reads "B / A"."""
    kind = report_kind(report, name)
    spec = get_run_kind(kind)
    base, catalogue = list(spec.keys), spec.metrics
    seeds = key != "seed" and _seeded(kind, each_seed) and has_repeats(report, base)
    if seeds:
        report, base = seed_means(report, kind), [k for k in base if k != "seed"]
    axis = pair_axis(report, key, base, name)
    values = axis.values(report)
    report, base = axis.strip(report), axis.others(base)
    # Never the run index: it differs between the two sides by construction.
    ties = [OPTIONS] if OPTIONS in spec.tiebreakers else []
    parts, only_a, only_b, notes, sides = [], [], [], [], ([], [])
    keys: dict[str, None] = {}
    metrics: dict[str, Metric] = {}
    for text_a, text_b in pairs:
        va, vb = (pair_value(values, text, axis, name) for text in (text_a, text_b))
        side_a, side_b = report[values == va], report[values == vb]
        label = (f"{name} {key}={va}", f"{name} {key}={vb}")
        matched, why = match_keys(list(zip(label, (side_a, side_b), strict=True)), base, ties)
        cmp_ = _compare_on(side_a, side_b, matched, catalogue, factor, drop)
        cmp_.table.insert(0, key, f"{vb} / {va}")
        parts.append(cmp_.table)
        only_a.append(cmp_.only_a.assign(**{key: va}))
        only_b.append(cmp_.only_b.assign(**{key: vb}))
        metrics.update({m.name: m for m in cmp_.metrics})
        keys.update(dict.fromkeys(matched))
        notes += [n for n in why if n not in notes]
        sides[0].append(va), sides[1].append(vb)
    return Comparison(
        kind=kind,
        keys=[key, *keys],
        metrics=[m for m in catalogue if m.name in metrics],
        table=pd.concat(parts, ignore_index=True),
        only_a=pd.concat(only_a, ignore_index=True),
        only_b=pd.concat(only_b, ignore_index=True),
        notes=notes,
        names=(f"{key}={_joined(sides[0])}", f"{key}={_joined(sides[1])}"),
        seeds=seeds,
        pair=key,
    )


def _joined(values: list[str]) -> str:
    return "|".join(dict.fromkeys(values))


def _flagged(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each row's noisy figures (`flagged_noisy`) as its ``noisy`` text."""
    flags = [" ".join(sorted(flagged_noisy(row))) for row in frame.to_dict("records")]
    return frame.assign(noisy=pd.Series(flags, index=frame.index, dtype=object))


def _compare_on(
    a: pd.DataFrame,
    b: pd.DataFrame,
    keys: list[str],
    catalogue: Sequence[Metric],
    factor: float,
    drop: float,
) -> Comparison:
    """Compare ``a`` and ``b`` on ``keys`` (already unique on both sides)."""
    ka, kb = (_flagged(keyed(frame, keys)) for frame in (a, b))
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
