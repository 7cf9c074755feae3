"""Accuracy against step time: every run is its own point, labelled by what distinguishes it
(CIFAR tiny and large no longer look alike), and a smoke run at 0 % gets a 0–10 % axis."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.colors import to_hex

from deqbench.report.matching import load_report
from deqbench.report.plot_accuracy import accuracy_canvas
from deqbench.report.plot_figure import Source
from deqbench.runs.train.columns import TRAIN_COLUMNS


def _canvas(tmp_path, rows):
    path = tmp_path / "acc.csv"
    pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)).to_csv(path, index=False)
    canvas = accuracy_canvas(Source(path, load_report(path)))
    assert not isinstance(canvas, str), canvas
    return canvas, canvas.top.axes[0]


def _row(run, model, top1, step_ms, **values):
    row = dict.fromkeys(TRAIN_COLUMNS)
    row.update(run=run, kind="train", model=model, dataset="cifar10", solver="anderson")
    row.update(gradient="ift", model_options="{}", status="completed")
    return row | {"eval_top1": top1, "step_ms_median": step_ms, **values}


def test_models_alike_in_solver_and_gradient_look_different(tmp_path):
    rows = [
        _row(0, "mdeq-cifar-tiny", 60.0, 100.0),
        _row(1, "mdeq-cifar-large", 80.0, 300.0),
        _row(2, "mdeq-cifar-large", 81.0, 310.0, gradient="jfb"),
    ]
    canvas, ax = _canvas(tmp_path, rows)
    points = {
        c.get_label(): (to_hex(c.get_facecolor()[0]), c.get_offsets().tolist())
        for c in ax.collections
    }
    assert points == {
        "run 0: mdeq-cifar-tiny ift": ("#1f77b4", [[100.0, 60.0]]),
        "run 1: mdeq-cifar-large ift": ("#ff7f0e", [[300.0, 80.0]]),
        "run 2: mdeq-cifar-large jfb": ("#2ca02c", [[310.0, 81.0]]),
    }
    legend = canvas.bottom.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(points)
    assert canvas.runs == 3


def test_a_smoke_run_at_zero_percent_gets_a_readable_axis(tmp_path):
    rows = [
        _row(i, "mdeq-cifar-tiny", 0.0, 9000.0, eval_top1_ci_low=0.0, eval_top1_ci_high=0.0, seed=i)
        for i in range(2)
    ]
    _, ax = _canvas(tmp_path, rows)
    assert ax.get_ylim() == pytest.approx((0.0, 10.0))
    assert ax.get_xlim() == pytest.approx((9000 - 900, 9000 + 900))  # 20 % of the time wide
