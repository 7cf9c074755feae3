"""Time to a target in the summary tables and warnings (`deqbench.report.targets`): a run that
never reached it says so; over seeds, ``k/n reached`` and the median (min–max) of the runs that
reached it; a real suite with repeats end to end, its CSV read back."""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np
import pytest
from rich.console import Console

from deqbench import plugins
from deqbench.cli import main
from deqbench.report import tables, targets
from deqbench.report.results import read_report
from deqbench.runs.train.kind import TRAIN, TRAIN_KEYS
from deqbench.testing.train_toys import TrainToys


def _text(table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=220).print(table)
    return buffer.getvalue()


def _row(gradient: str, seed: int, time_s: float | None, steps: int | None, **cells) -> dict:
    row = {"model": "tiny-deq", "solver": "anderson", "gradient": gradient, "seed": seed}
    row |= {"status": "completed", "options": "{}", "eval_top1": 90.0, "train_s": 40.0}
    row |= {"run": len(cells), "target_metric": "eval_top1", "target_value": 90.0}
    row |= {"target_reached": time_s is not None, "time_to_target_s": time_s}
    return row | {"steps_to_target": steps, "target_eval_s": 1.0 if steps else None} | cells


ROWS = [
    _row("ift", 0, 10.0, 100, run=0),
    _row("ift", 1, 30.0, 300, run=1),
    _row("ift", 2, None, None, run=2),
    _row("jfb", 0, None, None, run=3),
    _row("jfb", 1, None, None, run=4),
    _row("jfb", 2, 12.5, 125, run=5, status="diverged"),  # reached, then diverged: counts
]


def test_seeds_table_counts_the_runs_that_reached_and_gives_median_and_range():
    text = _text(tables.seeds_table(ROWS, TRAIN_KEYS))
    assert targets.SEEDS_NOTE in text
    header = next(line for line in text.splitlines() if "┃ reached" in line)
    assert "to target s" in header and "steps to target" in header
    ift = next(line for line in text.splitlines() if " ift " in line)
    jfb = next(line for line in text.splitlines() if " jfb " in line)
    assert "│ 2/3 " in ift and "│ 20 (10–30) " in ift and "│ 200 (100–300) " in ift
    assert "│ 1/3 " in jfb and "│ 12.5 " in jfb and "│ 125 " in jfb


def test_per_run_table_says_not_reached():
    text = _text(tables.train_table(ROWS[:3], TRAIN_KEYS))
    assert "to target s" in text.splitlines()[1]
    marks = [line.count("not reached") for line in text.splitlines() if " ift " in line]
    assert marks == [0, 0, 1]


def test_no_target_no_columns_and_no_warning():
    rows = [{k: v for k, v in r.items() if "target" not in k} for r in ROWS]
    assert "reached" not in _text(tables.seeds_table(rows, TRAIN_KEYS))
    assert "to target" not in _text(tables.train_table(rows, TRAIN_KEYS))
    assert TRAIN.warnings(rows) == []


def test_warning_names_the_runs_that_never_reached_their_target():
    assert TRAIN.warnings(ROWS) == [
        "3 of 6 runs never reached their target (top-1 ≥ 90 %): runs 2, 3, 4"
    ]


@pytest.mark.parametrize(
    ("cell", "flag"),
    [
        (True, True),
        (np.bool_(False), False),
        ("False", False),
        ("true", True),
        (None, None),
        (math.nan, None),
        ("", None),
    ],
)
def test_reached_reads_a_cell_as_written_or_read_back(cell, flag):
    assert targets.reached(cell) is flag


SUITE = """
[suite]
name = "tiny-target"
kind = "train"
seed = 5
device = "cpu"
repeats = 2
isolate = false

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-mlp"

[recipe]
optimizer = "sgd"
lr = 0.05
epochs = 2

[eval]
max_batches = 1
target_top1 = {target}
"""


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


@pytest.mark.parametrize("target", [0.001, 100])
def test_a_suite_with_a_target_reports_it(toys, cli, tmp_path, target):
    path = tmp_path / "t.toml"
    # blobs predicts 1 of 3 classes at chance: 0.001 % is reached at once; 100 % never is
    path.write_text(textwrap.dedent(SUITE.format(target=target)))
    out = tmp_path / "t.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), "--max-steps", "12"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    reached = frame["eval_top1"] >= target
    assert frame["target_reached"].map(targets.reached).tolist() == reached.tolist()
    for _, row in frame[reached].iterrows():  # per epoch: 48 / 8 = 6 steps
        assert row["steps_to_target"] in (6, 12) and row["time_to_target_s"] <= row["train_s"]
    for _, row in frame[~reached].iterrows():
        assert math.isnan(row["steps_to_target"]) and math.isnan(row["time_to_target_s"])
    seeds = result.output.split("over seeds")[1]
    assert f"│ {int(reached.sum())}/2 " in seeds
    assert ("never reached their target" in result.stderr) is (not reached.all())
