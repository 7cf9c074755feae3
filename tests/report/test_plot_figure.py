"""The figure keeps its panels' size whatever the legend: the legend sits below them in as many
columns as fit, the figure grows to hold it, and entries past `LEGEND_MAX` are counted."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.lines import Line2D

from deqbench.report.matching import load_report
from deqbench.report.plot_figure import LEGEND_MAX, Canvas, Source
from deqbench.runs.train.columns import TRAIN_COLUMNS


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "r.csv"
    row = dict.fromkeys(TRAIN_COLUMNS) | {"run": 0, "kind": "train", "status": "completed"}
    pd.DataFrame([row], columns=list(TRAIN_COLUMNS)).to_csv(path, index=False)
    return Source(path, load_report(path))


def _drawn(source, labels):
    canvas = Canvas(source, "t", 0, labels)
    ax = canvas.top.add_subplot()
    handles = [ax.plot([0, 1], [i, i])[0] for i in range(len(labels))]
    canvas.legend(handles, labels)
    canvas.figure.canvas.draw()
    height = ax.get_window_extent().height / canvas.figure.dpi  # inches
    return canvas, height


def test_a_long_legend_grows_the_figure_not_the_axes(source):
    short, short_axes = _drawn(source, ["run 0: ift", "run 1: jfb"])
    labels = [f"run {i}: mdeq-cifar-tiny ift f_max_iter={i}" for i in range(30)]
    long, long_axes = _drawn(source, labels)
    assert long_axes == pytest.approx(short_axes, rel=0.01)
    assert long.figure.get_figheight() > short.figure.get_figheight() + 1.5
    assert short.columns == 2 and long.columns == 2  # 6.4 in hold two 40-character entries
    legend = long.bottom.legends[0]
    assert legend.axes is None and legend.get_window_extent().y1 < long.top.bbox.y0 + 1


def test_entries_past_the_maximum_are_counted(source):
    labels = [f"run {i}" for i in range(LEGEND_MAX + 5)]
    canvas = Canvas(source, "t", 0, labels)
    canvas.legend([Line2D([], []) for _ in labels], labels)
    texts = [t.get_text() for t in canvas.bottom.legends[0].get_texts()]
    assert len(texts) == LEGEND_MAX + 1 and texts[-1] == "… and 5 more not listed"
