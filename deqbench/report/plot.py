"""Drawing a report as PNGs with matplotlib (the Agg canvas; no pyplot, no display needed).

From a training report: accuracy against step time (one point per run), training memory per
gradient estimator against the forward iteration cap (explicit baselines as horizontal lines),
convergence traces per solver (``REPORT.traces.csv``), training loss per run
(``REPORT.steps.csv``) and accuracy against eval NFE (``REPORT.evals.csv``). A solve report
gets its convergence traces. A plot without data is skipped with a note; failed runs are left
out of a plot and counted in its footer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from deqbench.errors import ConfigError
from deqbench.plugins import get_run_kind
from deqbench.report.matching import load_report, report_kind
from deqbench.report.plot_evals import draw_eval_curves, eval_curves
from deqbench.report.results import companion, read_report

#: Marker per gradient estimator (others take the spare ones in order).
MARKERS = {"ift": "o", "jfb": "s", "phantom": "^", "unrolled": "D"}
_SPARE_MARKERS = ["v", "P", "X", "<", ">", "h"]
#: Memory panels: column → y-axis label. ``saved_mb`` is the quantity the DEQ claim is about.
MEMORY = {
    "saved_mb": "autograd-saved memory per training step (MB)",
    "peak_mem_mb": "CUDA peak allocated memory (MB)",
    "rss_peak_mb": "process peak resident memory (MB)",
}
_LEGEND_MAX = 12


def _legend(ax) -> None:
    """A legend inside the axes when short, beside them when long (the layout makes room)."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > 6:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    elif entries:
        ax.legend(fontsize=8)


@dataclass(frozen=True)
class Drawn:
    """One plot: where it was written, or why it was skipped (``path`` None)."""

    name: str
    path: Path | None
    note: str = ""
    runs: int = 0  #: runs drawn (points, lines or baselines)


class _Source:
    """The report being drawn, its run labels and its companions."""

    def __init__(self, path: Path, frame: pd.DataFrame) -> None:
        self.path, self.frame = path, frame
        self.kind = report_kind(frame, str(path))
        self.suite = _first(frame.get("suite"))
        self.labels = run_labels(frame, self.kind)

    def failed(self) -> int:
        ok = [str(status) for status in get_run_kind(self.kind).ok]
        return int((~self.frame["status"].astype(str).isin(ok)).sum())

    def footer(self, left_out: int) -> str:
        text = f"report: {self.path}" + (f" (suite {self.suite})" if self.suite else "")
        text += f"; {len(self.frame)} runs"
        if left_out:
            text += f", {left_out} without data left out"
        failed = self.failed()
        return text + (f", {failed} failed" if failed else "")

    def companion(self, suffix: str) -> pd.DataFrame | None:
        path = companion(self.path, suffix)
        if not path.exists() or path.stat().st_size == 0:
            return None
        try:
            return read_report(path)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable CSV ({exc})") from None


def _first(series: pd.Series | None) -> str:
    if series is None:
        return ""
    values = series.dropna().astype(str)
    return values.iloc[0] if len(values) else ""


def _blank(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _value_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run_labels(frame: pd.DataFrame, kind: str) -> dict[int, str]:
    """Run index → a short label of the identity values that vary between the report's runs."""
    keys = [k for k in get_run_kind(kind).keys if k in frame]
    varying = [k for k in keys if frame[k].dropna().astype(str).nunique() > 1]
    if "options" in frame and not varying:
        varying = ["options"] if frame["options"].dropna().nunique() > 1 else []
    bare = {"model", "problem", "solver", "gradient"}  # values that name themselves
    labels = {}
    for _, row in frame.iterrows():
        if _blank(row["run"]):
            continue
        parts = [
            _value_text(row[k]) if k in bare else f"{k}={_value_text(row[k])}"
            for k in varying
            if not _blank(row[k])
        ]
        labels[int(row["run"])] = f"run {int(row['run'])}" + (
            ": " + " ".join(parts) if parts else ""
        )
    return labels


def _figure(source: _Source, title: str, left_out: int, ncols: int = 1, nrows: int = 1):
    fig = Figure(figsize=(6.4 * min(ncols, 3), 4.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(rect=(0, 0.05 / nrows, 1, 1 - 0.05 / nrows))
    fig.suptitle(title)
    fig.text(0.01, 0.01, source.footer(left_out), fontsize=7, ha="left", va="bottom")
    return fig


def _finite(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    numbers = frame[columns].apply(pd.to_numeric, errors="coerce")
    return frame[numbers.notna().all(axis=1) & (numbers.abs() != math.inf).all(axis=1)]


def _explicit(frame: pd.DataFrame) -> pd.Series:
    """Explicit baselines leave the solver (and gradient) columns empty."""
    return frame["solver"].map(_blank) if "solver" in frame else pd.Series(True, frame.index)


def _markers(gradients: list[str]) -> dict[str, str]:
    spare = iter(_SPARE_MARKERS * 4)
    return {g: MARKERS.get(g) or next(spare) for g in gradients}


def _colours(names: list[str]) -> dict[str, str]:
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def accuracy_vs_time(source: _Source, out: Path) -> Drawn:
    """Eval accuracy (top-1, else mIoU) against median step time: one point per run, with
    its 95 % Wilson interval as a bar where the report has one."""
    name = "accuracy_vs_step_time"
    frame = source.frame
    metric = next(
        (m for m in ("eval_top1", "eval_miou") if m in frame and frame[m].notna().any()), None
    )
    if metric is None or "step_ms_median" not in frame:
        return Drawn(name, None, "no run has an eval accuracy or mIoU")
    rows = _finite(frame, [metric, "step_ms_median"])
    if rows.empty:
        return Drawn(name, None, "no run has both an eval accuracy and a step time")
    fig = _figure(source, "Accuracy against training step time", len(frame) - len(rows))
    ax = fig.add_subplot()
    explicit = _explicit(rows)
    implicit = rows[~explicit]
    colours = _colours(sorted(implicit["solver"].astype(str).unique()))
    markers = _markers(sorted(implicit["gradient"].fillna("").astype(str).unique()))
    _interval_bars(ax, rows, metric)
    for _, row in implicit.iterrows():
        ax.scatter(
            row["step_ms_median"],
            row[metric],
            c=colours[str(row["solver"])],
            marker=markers[str(row["gradient"]) if not _blank(row["gradient"]) else ""],
            s=60,
            edgecolors="black",
            linewidths=0.5,
        )
    handles = [Line2D([], [], color=c, marker="o", ls="", label=s) for s, c in colours.items()]
    handles += [
        Line2D([], [], color="grey", marker=m, ls="", label=f"gradient {g or '?'}")
        for g, m in markers.items()
    ]
    for model, group in rows[explicit].groupby(rows[explicit]["model"].astype(str)):
        ax.scatter(group["step_ms_median"], group[metric], c="black", marker="*", s=160)
        for _, row in group.iterrows():
            ax.annotate(
                model,
                (row["step_ms_median"], row[metric]),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=8,
            )
    if explicit.any():
        handles.append(Line2D([], [], color="black", marker="*", ls="", ms=12, label="explicit"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.margins(0.08)  # points on the edge of the axes are hard to read
    ax.set_xlabel("training step time, median (ms)")
    unit = (
        "top-1 accuracy on the eval split (%)\nbars: 95 % Wilson interval"
        if metric == "eval_top1"
        else "eval mIoU (%)"
    )
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    return _save(fig, out, name, len(rows))


def _interval_bars(ax, rows: pd.DataFrame, metric: str) -> None:
    """Grey bars of each point's 95 % Wilson interval, where the report has one."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low not in rows or high not in rows:
        return
    bars = _finite(rows, [low, high])
    if bars.empty:
        return
    y = pd.to_numeric(bars[metric])
    spans = [y - pd.to_numeric(bars[low]), pd.to_numeric(bars[high]) - y]
    ax.errorbar(bars["step_ms_median"], y, yerr=spans, fmt="none", ecolor="grey", capsize=3)


def memory_vs_iterations(source: _Source, out: Path) -> Drawn:
    """Training memory per gradient estimator against ``f_max_iter``; baselines as lines."""
    name = "memory_vs_iterations"
    frame = source.frame
    panels = [
        m for m in MEMORY if m in frame and pd.to_numeric(frame[m], errors="coerce").notna().any()
    ]
    if "rss_peak_mb" in panels and len(panels) > 2:
        panels.remove("rss_peak_mb")  # the CUDA peak says more where there is one
    if not panels or "f_max_iter" not in frame:
        return Drawn(name, None, "no training memory figures")
    explicit = _explicit(frame)
    implicit = _finite(frame[~explicit], ["f_max_iter", panels[0]])
    if implicit.empty:
        return Drawn(name, None, "no implicit run has both f_max_iter and a memory figure")
    split = [k for k in ("solver", "image_size") if implicit[k].astype(str).nunique() > 1]
    fig = _figure(
        source,
        "Training memory against the forward iteration cap",
        len(frame) - len(implicit) - int(explicit.sum()),
        ncols=len(panels),
    )
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, column in zip(axes, panels, strict=True):
        rows = _finite(frame[~explicit], ["f_max_iter", column])
        for group, part in rows.groupby(["gradient", *split], dropna=False, sort=True):
            values = group if isinstance(group, tuple) else (group,)
            label = " ".join(
                _label_part(k, v) for k, v in zip(["gradient", *split], values, strict=True)
            )
            curve = part.groupby(pd.to_numeric(part["f_max_iter"]))[column].median().sort_index()
            marker = MARKERS.get(str(values[0]), "o")
            ax.plot(curve.index, curve.values, marker=marker, label=label)
        base = _finite(frame[explicit], [column])
        base_keys = ["model", *(["image_size"] if "image_size" in split else [])]
        for i, (group, part) in enumerate(base.groupby(base_keys, sort=True)):
            values = group if isinstance(group, tuple) else (group,)
            label = " ".join(_label_part(k, v) for k, v in zip(base_keys, values, strict=True))
            ax.axhline(
                pd.to_numeric(part[column]).median(),
                color=f"C{(i + 5) % 10}",
                ls="--",
                label=f"{label} (explicit)",
            )
        ax.set_xlabel("forward iteration cap f_max_iter (iterations)")
        ax.set_ylabel(MEMORY[column])
        highest = pd.to_numeric(pd.concat([rows[column], base[column]])).max()
        ax.set_ylim(0, highest * 1.12 or 1.0)  # from zero: memory ratios read off the axis
        caps = sorted(pd.to_numeric(rows["f_max_iter"]).unique())
        if len(caps) <= 12:
            ax.set_xticks(caps)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _legend(ax)
    baselines = len(_finite(frame[explicit], [panels[0]]))
    return _save(fig, out, name, len(implicit) + baselines)


def _label_part(key: str, value: object) -> str:
    if _blank(value):
        return "–"
    return f"{_value_text(value)} px" if key == "image_size" else _value_text(value)


def convergence(source: _Source, out: Path) -> Drawn:
    """Relative residual (median over samples) against solver step, one panel per solver."""
    name = "convergence"
    traces = source.companion("traces.csv")
    if traces is None or traces.empty or "rel_residual_median" not in traces:
        return Drawn(name, None, f"no traces in {companion(source.path, 'traces.csv').name}")
    traces = _finite(traces, ["run", "step", "rel_residual_median"])
    traces = traces[pd.to_numeric(traces["rel_residual_median"]) > 0]
    runs = source.frame.dropna(subset=["run"])
    solver = runs.set_index(runs["run"].astype(int))["solver"]
    traces = traces.assign(solver=traces["run"].astype(int).map(solver).fillna("?").astype(str))
    if traces.empty:
        return Drawn(name, None, "the traces hold no positive residuals")
    solvers = sorted(traces["solver"].unique())
    ncols = min(len(solvers), 3)
    nrows = math.ceil(len(solvers) / ncols)
    fig = _figure(source, "Convergence of the forward solve", 0, ncols=ncols, nrows=nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax, solver_name in zip(axes, solvers, strict=False):
        part = traces[traces["solver"] == solver_name]
        for i, (run, trace) in enumerate(part.groupby("run", sort=True)):
            ax.plot(
                trace["step"],
                trace["rel_residual_median"],
                label=source.labels.get(int(run), f"run {int(run)}") if i < _LEGEND_MAX else None,
            )
        ax.set_yscale("log")
        ax.set_title(solver_name)
        ax.set_xlabel("solver step k")
        ax.set_ylabel("relative residual ‖f(z)−z‖/‖f(z)‖\n(median over samples)")
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(ax)
    for ax in axes[len(solvers) :]:
        ax.set_visible(False)
    return _save(fig, out, name, traces["run"].nunique())


def loss(source: _Source, out: Path) -> Drawn:
    """Training loss against optimizer step, one line per run."""
    name = "loss"
    steps = source.companion("steps.csv")
    if steps is None or steps.empty or "loss" not in steps:
        return Drawn(name, None, f"no training steps in {companion(source.path, 'steps.csv').name}")
    steps = _finite(steps, ["run", "step", "loss"])
    if steps.empty:
        return Drawn(name, None, "no finite training loss")
    fig = _figure(source, "Training loss", 0)
    ax = fig.add_subplot()
    for i, (run, part) in enumerate(steps.groupby("run", sort=True)):
        label = source.labels.get(int(run), f"run {int(run)}") if i < _LEGEND_MAX else None
        ax.plot(part["step"], part["loss"], label=label, lw=1.2)
    if "mode" in steps:  # where the unrolled warm-up ends, when a suite has one
        ends = steps[steps["mode"] == "unrolled"].groupby("run")["step"].max().dropna().unique()
        for j, end in enumerate(sorted(ends)):
            ax.axvline(
                end + 0.5, color="grey", ls=":", label="end of unrolled warm-up" if j == 0 else None
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, out, name, steps["run"].nunique())


def accuracy_vs_eval_nfe(source: _Source, out: Path) -> Drawn:
    """Eval accuracy against eval NFE, one line per run (`deqbench.report.plot_evals`)."""
    curves = eval_curves(source.companion("evals.csv"))
    if isinstance(curves, str):
        return Drawn("accuracy_vs_eval_nfe", None, curves)
    fig = _figure(source, "Accuracy against evaluation compute ([eval] sweep)", 0)
    draw_eval_curves(fig.add_subplot(), curves, source.labels, _LEGEND_MAX)
    return _save(fig, out, "accuracy_vs_eval_nfe", len(curves.lines))


def _save(fig: Figure, out: Path, name: str, runs: int) -> Drawn:
    path = out / f"{name}.png"
    fig.savefig(path, dpi=100)
    return Drawn(name, path, runs=runs)


PLOTS: list[Callable[[_Source, Path], Drawn]] = [
    accuracy_vs_time,
    memory_vs_iterations,
    convergence,
    loss,
    accuracy_vs_eval_nfe,
]


def plot_report(report: str | Path, out: str | Path) -> list[Drawn]:
    """Draw every plot the report has data for into the folder ``out``."""
    report, out = Path(report), Path(out)
    source = _Source(report, load_report(report))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    return [draw(source, out) for draw in PLOTS]
