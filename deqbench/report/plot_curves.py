"""Per-run curves against a step: the forward solve's convergence (``REPORT.traces.csv``, one
panel per solver) and the training loss (``REPORT.steps.csv``). Each run keeps its own style
in both, and one legend below the panels lists them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from deqbench.report.plot_figure import Canvas, Drawn, Source, finite, save
from deqbench.report.plot_style import log_limits, magnitude_limits, step_limits
from deqbench.report.results import companion


def convergence(source: Source, out: Path) -> Drawn:
    """Relative residual (median over samples) against solver step, one panel per solver."""
    return save("convergence", convergence_canvas(source), out)


def convergence_canvas(source: Source) -> Canvas | str:
    """The convergence figure of ``source``, or why there is none."""
    traces = source.companion("traces.csv")
    if traces is None or traces.empty or "rel_residual_median" not in traces:
        return f"no traces in {companion(source.path, 'traces.csv').name}"
    traces = finite(traces, ["run", "step", "rel_residual_median"])
    traces = traces[pd.to_numeric(traces["rel_residual_median"]) > 0]
    runs = source.frame.dropna(subset=["run"])
    solver = runs.set_index(runs["run"].astype(int))["solver"]
    traces = traces.assign(
        run=traces["run"].astype(int),
        solver=traces["run"].astype(int).map(solver).fillna("?").astype(str),
    )
    if traces.empty:
        return "the traces hold no positive residuals"
    solvers = sorted(traces["solver"].unique())
    ncols = min(len(solvers), 3)
    nrows = math.ceil(len(solvers) / ncols)
    order = sorted(traces["run"].unique())
    canvas = Canvas(
        source,
        "Convergence of the forward solve",
        0,
        [source.label(r) for r in order],
        ncols=ncols,
        nrows=nrows,
    )
    axes = canvas.top.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    handles = {}
    for ax, solver_name in zip(axes, solvers, strict=False):
        part = traces[traces["solver"] == solver_name]
        for run, trace in part.groupby("run", sort=True):
            y = trace["rel_residual_median"]
            line = ax.plot(trace["step"], y, label=source.label(run), **source.style(run).line())
            handles[run] = line[0]
        ax.set_yscale("log")
        ax.set_title(solver_name)
        ax.set_xlabel("solver step k")
        ax.set_ylabel("relative residual ‖f(z)−z‖/‖f(z)‖\n(median over samples)")
        ax.set_xlim(step_limits(pd.to_numeric(part["step"])))
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylim(log_limits(pd.to_numeric(traces["rel_residual_median"])))
    for ax in axes[len(solvers) :]:
        ax.set_visible(False)
    canvas.legend([handles[r] for r in order], [source.label(r) for r in order])
    canvas.runs = traces["run"].nunique()
    return canvas


def loss(source: Source, out: Path) -> Drawn:
    """Training loss against optimizer step, one line per run."""
    return save("loss", loss_canvas(source), out)


def loss_canvas(source: Source) -> Canvas | str:
    """The training-loss figure of ``source``, or why there is none."""
    steps = source.companion("steps.csv")
    if steps is None or steps.empty or "loss" not in steps:
        return f"no training steps in {companion(source.path, 'steps.csv').name}"
    steps = finite(steps, ["run", "step", "loss"])
    if steps.empty:
        return "no finite training loss"
    steps = steps.assign(run=steps["run"].astype(int))
    order = sorted(steps["run"].unique())
    warmup = "end of unrolled warm-up"
    ends = []
    if "mode" in steps:  # where the unrolled warm-up ends, when a suite has one
        ends = sorted(steps[steps["mode"] == "unrolled"].groupby("run")["step"].max().unique())
    labels = [source.label(r) for r in order] + ([warmup] if ends else [])
    canvas = Canvas(source, "Training loss", 0, labels)
    ax = canvas.top.add_subplot()
    handles = []
    for run in order:
        part = steps[steps["run"] == run]
        style = source.style(run).line()
        handles += ax.plot(part["step"], part["loss"], lw=1.2, label=source.label(run), **style)
    for end in ends:
        mark = ax.axvline(end + 0.5, color="grey", ls=":", label=warmup)
    if ends:
        handles.append(mark)
    canvas.legend(handles, labels)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_xlim(step_limits(pd.to_numeric(steps["step"])))
    ax.set_ylim(magnitude_limits(pd.to_numeric(steps["loss"])))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    canvas.runs = steps["run"].nunique()
    return canvas
