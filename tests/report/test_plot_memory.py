"""The memory plot draws one line per configuration: explicit MDEQ at depth 6 and at depth 24
are two baselines at their own values (not one line at their median), implicit runs one line per
estimator and image size, seeds joined at their median. Read off the matplotlib Axes."""

from __future__ import annotations

import json

import pandas as pd

from deqbench.report.matching import load_report
from deqbench.report.plot_figure import Source
from deqbench.report.plot_memory import memory_canvas
from deqbench.runs.train.columns import TRAIN_COLUMNS

EXPLICIT = dict.fromkeys(["solver", "solver_options", "gradient", "gradient_options", "f_max_iter"])


def _row(run, saved, **values):
    row = dict.fromkeys(TRAIN_COLUMNS)
    row.update(
        run=run,
        kind="train",
        model="mdeq-cifar-tiny",
        dataset="synthetic",
        image_size=32,
        batch_size=32,
        solver="fixed-point",
        solver_options="{}",
        gradient="ift",
        gradient_options="{}",
        model_options="{}",
        seed=0,
        status="completed",
        saved_mb=saved,
    )
    return row | values


def _train_memory_rows():
    """The shape of suites/train-memory.toml: 2 estimators × 3 caps × 2 sizes, then explicit
    MDEQ at depths 6 and 24 and ResNet-18 (at 32 px)."""
    rows = []
    for gradient in ("ift", "unrolled"):
        for cap in (6, 12, 24):
            for size in (32, 64):
                saved = 100.0 * size / 32 * (cap if gradient == "unrolled" else 1)
                rows.append(
                    _row(len(rows), saved, gradient=gradient, f_max_iter=cap, image_size=size)
                )
    for depth, saved in ((6, 429.0), (24, 1536.0)):
        options = json.dumps({"variant": "cifar-tiny", "depth": depth})
        rows.append(
            _row(len(rows), saved, model="explicit-mdeq", model_options=options, **EXPLICIT)
        )
    rows.append(_row(len(rows), 300.0, model="resnet18", **EXPLICIT))
    return rows


def _axes(tmp_path, rows):
    path = tmp_path / "memory.csv"
    pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)).to_csv(path, index=False)
    canvas = memory_canvas(Source(path, load_report(path)))
    assert not isinstance(canvas, str), canvas
    return canvas, canvas.top.axes[0]


def test_one_line_per_configuration_and_per_baseline(tmp_path):
    canvas, ax = _axes(tmp_path, _train_memory_rows())
    lines = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    assert lines == {
        "mdeq-cifar-tiny 32 px ift": [[6, 100], [12, 100], [24, 100]],
        "mdeq-cifar-tiny 64 px ift": [[6, 200], [12, 200], [24, 200]],
        "mdeq-cifar-tiny 32 px unrolled": [[6, 600], [12, 1200], [24, 2400]],
        "mdeq-cifar-tiny 64 px unrolled": [[6, 1200], [12, 2400], [24, 4800]],
        # Two depths, two baselines (horizontal: y the same at both ends).
        "explicit-mdeq depth=6 32 px (explicit)": [[0, 429], [1, 429]],
        "explicit-mdeq depth=24 32 px (explicit)": [[0, 1536], [1, 1536]],
        "resnet18 32 px (explicit)": [[0, 300], [1, 300]],
    }
    styles = {(line.get_color(), str(line.get_linestyle()), line.get_marker()) for line in ax.lines}
    assert len(styles) == 7  # no two lines look alike
    assert canvas.runs == 15
    legend = canvas.bottom.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(lines)


def test_seeds_join_at_their_median(tmp_path):
    rows = [
        _row(0, 10.0, f_max_iter=6, seed=0),
        _row(1, 12.0, f_max_iter=6, seed=1),
        _row(2, 20.0, f_max_iter=6, seed=2),
        _row(3, 11.0, f_max_iter=12, seed=0),
    ]
    _, ax = _axes(tmp_path, rows)
    assert [line.get_xydata().tolist() for line in ax.get_lines()] == [[[6, 12], [12, 11]]]
    assert ax.get_ylim() == (0, 20 * 1.12)
