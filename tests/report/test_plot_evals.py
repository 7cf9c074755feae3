"""`deqbench plot`'s accuracy against evaluation NFE, from a report's ``evals.csv``: the curves'
data (one line per run, sorted by NFE) and the PNG."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deqbench.cli import main
from deqbench.report.plot import plot_report
from deqbench.report.plot_evals import draw_eval_curves, eval_curves
from deqbench.runs.train.columns import EVAL_COLUMNS, TRAIN_COLUMNS


def _evals(rows):
    return pd.DataFrame(rows, columns=list(EVAL_COLUMNS))


SWEEP = [  # run 1 written in another order; run 0's NFE saturate below its largest cap
    {"run": 1, "f_max_iter": 8, "eval_nfe_mean": 8.0, "eval_top1": 70.0},
    {"run": 1, "f_max_iter": 2, "eval_nfe_mean": 2.0, "eval_top1": 40.0},
    {"run": 0, "f_max_iter": 2, "eval_nfe_mean": 2.0, "eval_top1": 30.0},
    {"run": 0, "f_max_iter": 4, "eval_nfe_mean": 4.0, "eval_top1": 60.0},
    {"run": 0, "f_max_iter": 8, "eval_nfe_mean": 5.5, "eval_top1": 61.0},
    {"run": 1, "f_max_iter": 4, "eval_nfe_mean": 4.0, "eval_top1": 65.0},
]


def test_one_line_per_run_sorted_by_nfe():
    curves = eval_curves(_evals(SWEEP))
    assert curves.metric == "eval_top1" and list(curves.lines) == [0, 1]
    assert curves.lines[0]["eval_nfe_mean"].tolist() == [2.0, 4.0, 5.5]
    assert curves.lines[0]["eval_top1"].tolist() == [30.0, 60.0, 61.0]
    assert curves.lines[1]["eval_top1"].tolist() == [40.0, 65.0, 70.0]
    fig = Figure()
    ax = fig.add_subplot()
    draw_eval_curves(ax, curves, {0: "run 0: ift", 1: "run 1: jfb"})
    drawn = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    assert drawn == {
        "run 0: ift": [[2.0, 30.0], [4.0, 60.0], [5.5, 61.0]],
        "run 1: jfb": [[2.0, 40.0], [4.0, 65.0], [8.0, 70.0]],
    }


def test_segmentation_sweeps_plot_miou_and_missing_data_is_a_note():
    rows = [{"run": 0, "eval_nfe_mean": k, "eval_miou": 10.0 * k} for k in (3, 1)]
    curves = eval_curves(_evals(rows))
    assert curves.metric == "eval_miou"
    assert curves.lines[0]["eval_miou"].tolist() == [10.0, 30.0]
    assert "no evaluation sweep" in eval_curves(None)
    assert "no evaluation sweep" in eval_curves(_evals([]))
    assert "no sweep row" in eval_curves(_evals([{"run": 0, "eval_top1": 5.0}]))


def test_the_png_is_written_from_the_report(cli, tmp_path):
    path = tmp_path / "r.csv"
    rows = [
        dict.fromkeys(TRAIN_COLUMNS) | {"run": i, "kind": "train", "status": "completed"}
        for i in (0, 1)
    ]
    pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)).to_csv(path, index=False)
    _evals(SWEEP).to_csv(tmp_path / "r.evals.csv", index=False)
    drawn = {d.name: d for d in plot_report(path, tmp_path / "plots")}
    png = drawn["accuracy_vs_eval_nfe"]
    assert png.path == tmp_path / "plots" / "accuracy_vs_eval_nfe.png" and png.runs == 2
    image = matplotlib.image.imread(png.path)
    assert image.ndim == 3 and np.ptp(image[..., :3]) > 0  # not a blank canvas
    result = cli.invoke(main, ["plot", str(path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "accuracy_vs_eval_nfe.png (2 runs)" in result.output
