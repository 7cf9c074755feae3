"""Loss and convergence curves: eleven or more runs never share a look, a run keeps its style
in both plots, and a flat 2-step smoke series gets non-degenerate limits."""

from __future__ import annotations

import pandas as pd
import pytest

from deqbench.report.matching import load_report
from deqbench.report.plot_curves import convergence_canvas, loss_canvas
from deqbench.report.plot_figure import Source
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.train.columns import STEP_COLUMNS, TRAIN_COLUMNS


def _source(tmp_path, runs, loss, steps=2):
    path = tmp_path / "r.csv"
    rows = [
        dict.fromkeys(TRAIN_COLUMNS)
        | {"run": r, "kind": "train", "model": "m", "solver": "anderson", "gradient": "ift"}
        | {"f_max_iter": 4 + r, "status": "completed"}
        for r in range(runs)
    ]
    pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)).to_csv(path, index=False)
    step_rows = [
        {"run": r, "step": s, "loss": loss(r, s)} for r in range(runs) for s in range(steps)
    ]
    pd.DataFrame(step_rows, columns=list(STEP_COLUMNS)).to_csv(
        tmp_path / "r.steps.csv", index=False
    )
    traces = [
        {"run": r, "step": k, "rel_residual_median": 0.5 ** (k + r)}
        for r in range(runs)
        for k in range(3)
    ]
    pd.DataFrame(traces, columns=list(TRACE_COLUMNS)).to_csv(tmp_path / "r.traces.csv", index=False)
    return Source(path, load_report(path))


def _looks(ax):
    return {
        line.get_label(): (line.get_color(), line.get_linestyle(), line.get_marker())
        for line in ax.get_lines()
    }


def test_twelve_loss_curves_all_look_different_and_keep_their_style(tmp_path):
    source = _source(tmp_path, 12, lambda r, s: 2.3 - 0.1 * s - 0.01 * r, steps=5)
    loss = loss_canvas(source)
    looks = _looks(loss.top.axes[0])
    assert len(looks) == 12 and len(set(looks.values())) == 12
    assert looks["run 10: f_max_iter=14"] == ("C0", "--", "s")  # colour C0 again, not the same look
    assert [t.get_text() for t in loss.bottom.legends[0].get_texts()] == list(looks)
    convergence = convergence_canvas(source)
    assert _looks(convergence.top.axes[0]) == looks  # the same run, the same style


def test_a_flat_two_step_loss_gets_a_padded_window(tmp_path):
    ax = loss_canvas(_source(tmp_path, 1, lambda r, s: 2.3)).top.axes[0]
    assert ax.get_ylim() == pytest.approx((2.185, 2.415))
    assert ax.get_xlim() == pytest.approx((-0.05, 1.05))
