"""Training memory against the forward iteration cap ``f_max_iter``: one line per
configuration, that is per set of runs that differ in nothing but the cap (and the seed, whose
repeats give the median). Explicit baselines have no cap: each of their configurations is a
horizontal dashed line, so explicit MDEQ at depth 6 and at depth 24 are two lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from deqbench.report.plot_figure import Canvas, Drawn, Source, explicit, finite, save
from deqbench.report.plot_labels import configurations
from deqbench.report.plot_style import baseline_style, padded_limits, styles

NAME = "memory_vs_iterations"
#: Memory panels: column → y-axis label. ``saved_mb`` is the quantity the DEQ claim is about.
MEMORY = {
    "saved_mb": "autograd-saved memory per training step (MB)",
    "peak_mem_mb": "CUDA peak allocated memory (MB)",
    "rss_peak_mb": "process peak resident memory (MB)",
}
#: What a configuration may vary in along one line: the x axis, and repeats.
ALONG_A_LINE = ("f_max_iter", "seed")


def memory_vs_iterations(source: Source, out: Path) -> Drawn:
    """Training memory per configuration against ``f_max_iter``; baselines as lines."""
    return save(NAME, memory_canvas(source), out)


def memory_canvas(source: Source) -> Canvas | str:
    """The memory figure of ``source``, or why there is none."""
    frame = source.frame
    panels = [
        m for m in MEMORY if m in frame and pd.to_numeric(frame[m], errors="coerce").notna().any()
    ]
    if "rss_peak_mb" in panels and len(panels) > 2:
        panels.remove("rss_peak_mb")  # the CUDA peak says more where there is one
    if not panels or "f_max_iter" not in frame:
        return "no training memory figures"
    is_explicit = explicit(frame)
    implicit = finite(frame[~is_explicit], ["f_max_iter", panels[0]])
    if implicit.empty:
        return "no implicit run has both f_max_iter and a memory figure"
    drawn = pd.concat(
        [
            frame[~is_explicit & _any_finite(frame, ["f_max_iter"], panels)],
            frame[is_explicit & _any_finite(frame, [], panels)],
        ]
    )
    config, labels = configurations(drawn, source.kind, ALONG_A_LINE)
    lines = list(dict.fromkeys(config[~explicit(drawn)]))
    baselines = list(dict.fromkeys(config[explicit(drawn)]))
    line_style = dict(zip(lines, styles(len(lines)), strict=True))
    names = {c: labels[c] or "implicit runs" for c in lines}
    names |= {c: (labels[c] or "baseline") + " (explicit)" for c in baselines}
    baselines_drawn = len(finite(frame[is_explicit], [panels[0]]))
    canvas = Canvas(
        source,
        "Training memory against the forward iteration cap",
        len(frame) - len(implicit) - baselines_drawn,
        [names[c] for c in [*lines, *baselines]],
        ncols=len(panels),
    )
    axes = canvas.top.subplots(1, len(panels), squeeze=False)[0]
    legend: dict[str, object] = {}
    for ax, column in zip(axes, panels, strict=True):
        rows = finite(drawn[~explicit(drawn)], ["f_max_iter", column])
        for c in lines:
            part = rows[config[rows.index] == c]
            if part.empty:
                continue
            x = pd.to_numeric(part["f_max_iter"])
            curve = pd.to_numeric(part[column]).groupby(x).median().sort_index()
            style = line_style[c].line() | {"markevery": None}
            legend[names[c]] = ax.plot(curve.index, curve.values, label=names[c], **style)[0]
        base = finite(drawn[explicit(drawn)], [column])
        for j, c in enumerate(baselines):
            part = base[config[base.index] == c]
            if not part.empty:
                level = pd.to_numeric(part[column]).median()
                style = baseline_style(len(lines) + j)
                legend[names[c]] = ax.axhline(level, label=names[c], **style)
        ax.set_xlabel("forward iteration cap f_max_iter (iterations)")
        ax.set_ylabel(MEMORY[column])
        highest = pd.to_numeric(pd.concat([rows[column], base[column]])).max()
        # From zero: memory ratios read off the axis.
        ax.set_ylim(0, highest * 1.12 if highest > 0 else 1.0)
        caps = sorted(pd.to_numeric(rows["f_max_iter"]).unique())
        ax.set_xlim(padded_limits(caps, min_span=2.0, pad=0.06))
        if len(caps) <= 12:
            ax.set_xticks(caps)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    canvas.legend(list(legend.values()), list(legend))
    canvas.runs = len(implicit) + baselines_drawn
    return canvas


def _any_finite(frame: pd.DataFrame, required: list[str], panels: list[str]) -> pd.Series:
    """Rows finite in every ``required`` column and in at least one panel column."""
    numbers = frame[[*required, *panels]].apply(pd.to_numeric, errors="coerce")
    ok = numbers.notna() & (numbers.abs() != float("inf"))
    return ok[required].all(axis=1) & ok[panels].any(axis=1)
