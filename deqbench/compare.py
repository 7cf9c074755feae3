"""Comparing reports run by run: ratios B / A for costs, differences in points for accuracy.

Two reports: rows are matched one to one on what defines a run (the identity columns of the
report's kind, solve or training). Where those collide inside a report, the comparison keys on
what tells the rows apart (the run index last) or refuses. One report with ``--pair A:B``: two
solvers measured side by side in the same suite are matched on everything else. Rendering to
rich, markdown and CSV lives in `deqbench.compare_render`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deqbench.errors import ConfigError
from deqbench.noise import has_repeats, seed_groups, within_noise
from deqbench.results import companion, read_report

#: Identity columns of a solve report; two rows with equal values measured the same thing.
SOLVE_KEYS = [
    "problem",
    "cell",
    "batch_size",
    "solver",
    "solver_options",
    "max_iter",
    "smoke_max_iter",  # the smoke cap (--limit), when the report records it
    "tol",
    "stop_mode",
    "gradient",
    "gradient_options",
    "dtype",
]
#: Identity columns of a training report (`train_schema`: the run's declared recipe + smoke cap).
TRAIN_KEYS = [
    "model",
    "head",
    "dataset",
    "image_size",
    "batch_size",
    "solver",
    "solver_options",
    "gradient",
    "gradient_options",
    "f_max_iter",
    "f_tol",
    "b_max_iter",
    "model_options",
    "seed",
    "precision",
    "max_steps",
]
#: Columns added to the keys, in order, only while rows of one report still collide.
TIEBREAKERS = {"solve": ["run"], "train": ["options", "run"]}
#: Backward-compatible name of the solve identity columns.
KEYS = SOLVE_KEYS


@dataclass(frozen=True)
class Metric:
    """One compared figure: a ratio B / A (costs) or a difference B − A in points (accuracy)."""

    name: str
    label: str
    points: bool = False  #: difference in points instead of a ratio
    higher_is_better: bool = False
    marked: bool = True  #: counts as a regression when it gets worse beyond the threshold


SOLVE_METRICS = [
    Metric("nfe", "NFE"),
    Metric("solve_ms_median", "solve ms"),
    Metric("solve_cost_f_evals", "cost f-evals"),
    Metric("overhead_per_nfe", "×bare/NFE"),
    Metric("solver_mem_mb", "solver MB"),
    Metric("rel_residual_max", "rel res max", marked=False),  # below tol either way
    Metric("backward_ms_median", "bwd ms"),
    Metric("step_ms_median", "step ms"),
    Metric("saved_mb", "saved MB"),
]
TRAIN_METRICS = [
    Metric("eval_top1", "top-1", points=True, higher_is_better=True),
    Metric("eval_top5", "top-5", points=True, higher_is_better=True),
    Metric("eval_miou", "mIoU", points=True, higher_is_better=True),
    Metric("eval_pixel_acc", "pixel acc", points=True, higher_is_better=True),
    Metric("step_ms_median", "step ms"),
    Metric("images_per_s", "img/s", higher_is_better=True),
    Metric("train_s", "train s"),
    Metric("f_nfe_mean", "f NFE"),
    Metric("b_nfe_mean", "b NFE"),
    Metric("eval_nfe_mean", "eval NFE"),
    Metric("saved_mb", "saved MB"),
    Metric("peak_mem_mb", "CUDA peak MB"),
    Metric("rss_peak_mb", "RSS MB"),
    Metric("train_loss_final", "final loss", marked=False),
]
#: Status ranks: a higher rank on side B is worse. Unknown statuses count as failures.
_RANK = {"completed": 0, "converged": 0, "max_iter": 1}
_FAILED_RANK = 2
#: Meta fields that must agree for times and memory to be comparable across reports.
_META_FIELDS = {
    "platform": "machine",
    "device_name": "machine",
    "cpu_count": "machine",
    "torch_threads": "machine",  # times scale with it as much as with the machine
    "device": "device",
    "python": "versions",
    "torch": "versions",
    "deqbench": "versions",
}


@dataclass
class Comparison:
    """The outcome of comparing B against A."""

    kind: str  #: "solve" or "train"
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


# ----------------------------------------------------------------------------- loading


def load_report(path: str | Path) -> pd.DataFrame:
    """Read a report CSV; anything that is not a deqbench report is one `ConfigError` line."""
    try:
        frame = read_report(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path}: empty file, not a deqbench report") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a deqbench report CSV ({first})") from None
    report_kind(frame, str(path))
    return frame


def report_kind(frame: pd.DataFrame, name: str = "report") -> str:
    """``"train"`` or ``"solve"``, from the ``kind`` column or the columns present."""
    columns = set(frame.columns)
    if "kind" in columns and (frame["kind"].astype(str) == "train").any():
        return "train"
    if {"status", "model", "dataset"} <= columns:
        return "train"
    if {"status", "problem", "solver"} <= columns:
        return "solve"
    raise ConfigError(
        f"{name}: not a deqbench report: it has none of the column sets of one "
        "(solve: problem, solver, status…; training: kind, model, dataset, status…); "
        f"its columns are {', '.join(map(str, frame.columns[:8]))}"
        + (" …" if len(frame.columns) > 8 else "")
    )


# ----------------------------------------------------------------------------- matching


def _canon(value: object) -> str:
    """A key value as text, so 18 and 18.0, or 1e-3 and 0.001, match across reports."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        number = float(value)
        return str(int(number)) if number.is_integer() else f"{number:.12g}"
    text = str(value)
    if text.startswith("{"):  # options, stored as JSON: key order must not matter
        try:
            return json.dumps(json.loads(text), sort_keys=True)
        except ValueError:
            return text
    return text


def _keyed(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for key in keys:
        out[key] = frame[key].map(_canon).astype(object)
    return out


def _duplicates(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return frame[frame.duplicated(list(keys), keep=False)]


def _describe(row: pd.Series, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys if row[k] != "")


def match_keys(
    frames: Sequence[tuple[str, pd.DataFrame]],
    keys: Sequence[str],
    tiebreakers: Sequence[str],
) -> tuple[list[str], list[str]]:
    """The keys (of ``keys``, plus tiebreakers only as needed) that make every row of every
    frame unique; raises `ConfigError` naming a colliding run when nothing does."""
    present = [k for k in keys if all(k in f for _, f in frames)]
    if not present:
        raise ConfigError("the reports share none of the columns that identify a run")
    notes: list[str] = []
    extra = [t for t in tiebreakers if all(t in f for _, f in frames)]
    while True:
        clash = [(n, _duplicates(_keyed(f, present), present)) for n, f in frames]
        clash = [(n, d) for n, d in clash if len(d)]
        if not clash:
            return present, notes
        name, dup = clash[0]
        if not extra:
            first = dup.iloc[0]
            same = int((dup[present] == first[present]).all(axis=1).sum())
            raise ConfigError(
                f"{name}: {same} rows share the identity "
                f"({_describe(dup.iloc[0], present) or 'no identity values'}), so runs cannot "
                "be matched one to one (a report appended to twice, or a swept key that no "
                "identity column records?)"
            )
        nxt = extra.pop(0)
        notes.append(f"rows of {name} share their identity columns; matching on {nxt!r} as well")
        present.append(nxt)


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


#: Columns beside a figure that hold its uncertainty (`deqbench.noise.intervals`).
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


def seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """A training report with one row per configuration: `deqbench.noise.seed_groups` of
    every compared figure (mean, ``_sd``, ``_n``; Wilson interval of the mean accuracy)."""
    figures = [m.name for m in TRAIN_METRICS] + ["eval_count"]
    return seed_groups(frame, TRAIN_KEYS, figures).assign(kind="train")


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
    within noise (`deqbench.noise.within_noise`: listed in the ``noise`` column instead).
    Training reports that both repeat runs with several seeds are compared configuration by
    configuration, on seed means (`seed_means`), unless ``each_seed``.
    """
    kinds = {report_kind(a, names[0]), report_kind(b, names[1])}
    if len(kinds) > 1:
        raise ConfigError(
            f"{names[0]} and {names[1]}: one is a solve report, the other a training one"
        )
    kind = kinds.pop()
    base, catalogue = (
        (TRAIN_KEYS, TRAIN_METRICS) if kind == "train" else (SOLVE_KEYS, SOLVE_METRICS)
    )
    seeds, notes = False, []
    if kind == "train" and not each_seed:
        repeated = [has_repeats(frame, TRAIN_KEYS) for frame in (a, b)]
        if all(repeated):
            seeds, base = True, [k for k in base if k != "seed"]
            a, b = seed_means(a), seed_means(b)
        elif any(repeated):
            one = names[repeated.index(True)]
            notes.append(f"only {one} repeats runs with several seeds: matched seed by seed")
    keys, matched = match_keys(list(zip(names, (a, b), strict=True)), base, TIEBREAKERS[kind])
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
    base, catalogue = (
        (TRAIN_KEYS, TRAIN_METRICS) if kind == "train" else (SOLVE_KEYS, SOLVE_METRICS)
    )
    seeds = kind == "train" and not each_seed and has_repeats(report, TRAIN_KEYS)
    if seeds:
        report = seed_means(report)
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
    ka, kb = _keyed(a, keys), _keyed(b, keys)
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


# ----------------------------------------------------------------------------- metadata


def meta_differences(a: str | Path, b: str | Path) -> list[str]:
    """Warnings when the two reports' ``.meta.json`` show different machines, devices or
    versions (their times and memory are then not comparable as ratios)."""
    metas = []
    for path in (Path(a), Path(b)):
        meta_path = companion(path, "meta.json")
        try:
            metas.append(json.loads(meta_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return [f"no {meta_path.name} beside {path}: machines and versions not checked"]
        except (OSError, ValueError) as exc:
            return [f"{meta_path}: unreadable ({exc}); machines and versions not checked"]
    ma, mb = metas
    found: dict[str, list[str]] = {}
    for key, what in _META_FIELDS.items():
        if ma.get(key) != mb.get(key):
            found.setdefault(what, []).append(f"{key} {ma.get(key)!r} vs {mb.get(key)!r}")
    pa, pb = ma.get("plugins") or {}, mb.get("plugins") or {}
    for plugin in sorted(set(pa) & set(pb)):
        if pa[plugin] != pb[plugin]:
            found.setdefault("versions", []).append(f"plugin {plugin} {pa[plugin]} vs {pb[plugin]}")
    return [
        f"the reports come from different {what}: {'; '.join(diffs)}"
        for what, diffs in found.items()
    ]
