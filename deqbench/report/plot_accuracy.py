"""Accuracy against training step time: one point per run (explicit baselines too), in the
run's own colour and marker, numbered, with its 95 % Wilson interval as a bar where the report
has one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from deqbench.report.plot_figure import Canvas, Drawn, Source, finite, save
from deqbench.report.plot_style import padded_limits, percent_limits

NAME = "accuracy_vs_step_time"


def accuracy_vs_time(source: Source, out: Path) -> Drawn:
    """Eval accuracy (top-1, else mIoU) against median step time, one point per run."""
    return save(NAME, accuracy_canvas(source), out)


def accuracy_canvas(source: Source) -> Canvas | str:
    """The accuracy figure of ``source``, or why there is none."""
    frame = source.frame
    metric = next(
        (m for m in ("eval_top1", "eval_miou") if m in frame and frame[m].notna().any()), None
    )
    if metric is None or "step_ms_median" not in frame:
        return "no run has an eval accuracy or mIoU"
    rows = finite(frame, [metric, "step_ms_median", "run"])
    if rows.empty:
        return "no run has both an eval accuracy and a step time"
    runs = [int(r) for r in rows["run"]]
    canvas = Canvas(
        source,
        "Accuracy against training step time",
        len(frame) - len(rows),
        [source.label(r) for r in runs],
    )
    ax = canvas.top.add_subplot()
    spans = _interval_bars(ax, rows, metric)
    x, y = pd.to_numeric(rows["step_ms_median"]), pd.to_numeric(rows[metric])
    handles = []
    for run, step_ms, value in zip(runs, x, y, strict=True):
        style = source.style(run)
        ax.scatter(
            step_ms, value, s=60, ec="black", lw=0.5, label=source.label(run), **style.point()
        )
        ax.annotate(
            str(run), (step_ms, value), xytext=(5, 4), textcoords="offset points", fontsize=7
        )
        point = {"c": style.color, "marker": style.marker, "mec": "black", "mew": 0.5, "ms": 7}
        handles.append(Line2D([], [], ls="", **point))
    canvas.legend(handles, [source.label(r) for r in runs])
    scale = max(abs(x.max()), 1e-9)
    ax.set_xlim(padded_limits(x, min_span=0.2 * scale, floor=0.0))
    ax.set_ylim(percent_limits([*y, *spans]))
    ax.set_xlabel("training step time, median (ms)")
    unit = (
        "top-1 accuracy on the eval split (%)\nbars: 95 % Wilson interval"
        if metric == "eval_top1"
        else "eval mIoU (%)"
    )
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    canvas.runs = len(rows)
    return canvas


def _interval_bars(ax, rows: pd.DataFrame, metric: str) -> list[float]:
    """Grey bars of each point's 95 % Wilson interval, where the report has one; their ends."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low not in rows or high not in rows:
        return []
    bars = finite(rows, [low, high])
    if bars.empty:
        return []
    y = pd.to_numeric(bars[metric])
    lows, highs = pd.to_numeric(bars[low]), pd.to_numeric(bars[high])
    ax.errorbar(
        bars["step_ms_median"], y, yerr=[y - lows, highs - y], fmt="none", ecolor="grey", capsize=3
    )
    return [*lows, *highs]
