"""Accuracy against evaluation compute, from a training report's evaluation sweep
(``REPORT.evals.csv``, ``[eval] sweep``): one line per run, x the mean forward NFE per eval
batch (a log₂ axis when they span a factor of 8 or more), y top-1 accuracy (mIoU for
segmentation), with the 95 % Wilson interval as bars where the sweep has one. Drawn as
``accuracy_vs_eval_nfe.png``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.ticker import ScalarFormatter

from deqbench.report.plot_figure import Canvas, Drawn, Source, save
from deqbench.report.plot_style import Style, magnitude_limits, percent_limits, styles

#: The y columns an evaluation sweep may carry, in order of preference, and their axis labels.
METRICS = {"eval_top1": "top-1 accuracy on the eval split (%)", "eval_miou": "eval mIoU (%)"}


@dataclass(frozen=True)
class EvalCurves:
    """What `accuracy_vs_eval_nfe` draws: per run, its sweep rows sorted by NFE."""

    metric: str  #: the y column, ``eval_top1`` or ``eval_miou``
    lines: dict[int, pd.DataFrame]  #: run → rows with ``eval_nfe_mean``, ``metric`` (and CIs)


def eval_curves(evals: pd.DataFrame | None) -> EvalCurves | str:
    """The curves of an ``evals.csv`` frame, or why there are none (a note)."""
    if evals is None or evals.empty:
        return "no evaluation sweep ([eval] sweep) in the report's evals.csv"
    metric = next((m for m in METRICS if m in evals and evals[m].notna().any()), None)
    if metric is None or "eval_nfe_mean" not in evals:
        return "the evaluation sweep has no accuracy, mIoU or NFE"
    columns = ["run", "eval_nfe_mean", metric]
    numbers = evals[columns].apply(pd.to_numeric, errors="coerce")
    finite = numbers.notna().all(axis=1) & (numbers.abs() != math.inf).all(axis=1)
    rows = evals[finite]
    if rows.empty:
        return "no sweep row has both an accuracy and an NFE"
    keep = [
        c for c in (*columns, "f_max_iter", f"{metric}_ci_low", f"{metric}_ci_high") if c in rows
    ]
    lines = {}
    for run, part in rows.groupby(pd.to_numeric(rows["run"]).astype(int), sort=True):
        order = [c for c in ("eval_nfe_mean", "f_max_iter") if c in part]
        lines[int(run)] = part[keep].sort_values(order).reset_index(drop=True)
    return EvalCurves(metric, lines)


def draw_eval_curves(
    ax,
    curves: EvalCurves,
    labels: dict[int, str],
    legend_max: int = 12,
    run_styles: dict[int, Style] | None = None,
) -> list:
    """Draw ``curves`` on the matplotlib axes ``ax``, labelled as ``labels`` say (the first
    ``legend_max`` lines) and styled as ``run_styles`` say; returns the lines (for a legend)."""
    low, high = f"{curves.metric}_ci_low", f"{curves.metric}_ci_high"
    fallback = styles(len(curves.lines))
    drawn, ends = [], []
    for i, (run, line) in enumerate(curves.lines.items()):
        x, y = pd.to_numeric(line["eval_nfe_mean"]), pd.to_numeric(line[curves.metric])
        label = labels.get(run, f"run {run}") if i < legend_max else None
        style = (run_styles or {}).get(run) or fallback[i]
        drawn += ax.plot(x, y, label=label, **style.line() | {"markevery": None})
        if low in line and high in line and line[[low, high]].notna().all().all():
            lows, highs = pd.to_numeric(line[low]), pd.to_numeric(line[high])
            ax.errorbar(x, y, yerr=[y - lows, highs - y], fmt="none", ecolor=style.color, alpha=0.4)
            ends += [*lows, *highs]
    nfe = pd.concat([pd.to_numeric(line["eval_nfe_mean"]) for line in curves.lines.values()])
    if nfe.min() > 0 and nfe.max() >= 8 * nfe.min():  # caps swept in doublings, as usual
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 8, not 2^3
        ax.margins(x=0.08)
    else:
        ax.set_xlim(magnitude_limits(nfe))
    values = [v for line in curves.lines.values() for v in pd.to_numeric(line[curves.metric])]
    ax.set_ylim(percent_limits([*values, *ends]))
    ax.set_xlabel("forward NFE per eval batch, mean (evaluation compute)")
    bars = "\nbars: 95 % Wilson interval" if curves.metric == "eval_top1" else ""
    ax.set_ylabel(METRICS[curves.metric] + bars)
    ax.grid(alpha=0.3)
    return drawn


def accuracy_vs_eval_nfe(source: Source, out: Path) -> Drawn:
    """Eval accuracy against eval NFE, one line per run, in each run's style."""
    return save("accuracy_vs_eval_nfe", eval_canvas(source), out)


def eval_canvas(source: Source) -> Canvas | str:
    """The accuracy-against-eval-NFE figure of ``source``, or why there is none."""
    curves = eval_curves(source.companion("evals.csv"))
    if isinstance(curves, str):
        return curves
    runs = list(curves.lines)
    title = "Accuracy against evaluation compute ([eval] sweep)"
    canvas = Canvas(source, title, 0, [source.label(r) for r in runs])
    ax = canvas.top.add_subplot()
    lines = draw_eval_curves(ax, curves, source.labels, len(runs), source.styles)
    canvas.legend(lines, [source.label(r) for r in runs])
    canvas.runs = len(runs)
    return canvas
