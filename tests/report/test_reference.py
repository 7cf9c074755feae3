"""Reproduced or not against a published figure (`deqbench.report.reference`): the verdict on
crafted rows, its round trip through a report, the summary table's mark, and compare's."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from deqbench.cli import main
from deqbench.report.reference import caption, mark, reproduced
from deqbench.report.results import ReportWriter, read_report
from deqbench.report.tables import train_table
from deqbench.runs.train.columns import TRAIN_COLUMNS
from deqbench.runs.train.kind import TRAIN, TRAIN_KEYS

TOP1 = {"reference_metric": "eval_top1", "reference_value": 75.4, "reference_band": 0.5}
TOP1 |= {"reference_source": "JR paper, Table 2"}
MIOU = {"reference_metric": "eval_miou", "reference_value": 75.1, "reference_band": 1.0}
MIOU |= {"reference_source": "MDEQ paper"}


@pytest.mark.parametrize(
    ("row", "verdict"),
    [
        ({"status": "completed", "eval_top1": 75.4, **TOP1}, "yes"),
        ({"status": "completed", "eval_top1": 75.0, **TOP1}, "yes"),  # 0.4 below
        ({"status": "completed", "eval_top1": 75.9, **TOP1}, "yes"),  # the edge: 0.5000000000000057
        ({"status": "completed", "eval_top1": 74.9, **TOP1}, "yes"),  # the other edge
        ({"status": "completed", "eval_top1": 75.91, **TOP1}, "no"),  # above is no match either
        ({"status": "completed", "eval_top1": 74.8, **TOP1}, "no"),
        ({"status": "completed", "eval_miou": 74.2, "eval_top1": 75.4, **MIOU}, "yes"),
        ({"status": "completed", "eval_miou": 73.9, **MIOU}, "no"),
        ({"status": "error", "eval_top1": 75.4, **TOP1}, "no"),  # a failed run
        ({"status": "diverged", **TOP1}, "no"),
        ({"status": "completed", "eval_top1": float("nan"), **TOP1}, "no"),  # no final eval
        ({**TOP1}, "no"),  # before the run: what a run that never ends with a status keeps
        ({"status": "completed", "eval_top1": 75.4}, "n/a"),
        ({"status": "completed", "eval_top1": 75.4, "reference_metric": float("nan")}, "n/a"),
    ],
)
def test_the_verdict_of_a_crafted_row(row, verdict):
    assert reproduced(row) == verdict


def _rows() -> list[dict]:
    """Four runs of a suite: two reproduced and not, one failed, one without a figure."""
    base = {"suite": "s", "kind": "train", "model": "mdeq-cpu-small", "dataset": "digits"}
    specs = [
        {"solver": "broyden", "status": "completed", "eval_top1": 75.2, **TOP1},
        {"solver": "anderson", "status": "completed", "eval_top1": 73.0, **TOP1},
        {"solver": "fixed-point", "status": "oom", "error": "CUDA out of memory", **TOP1},
        {"model": "resnet18", "status": "completed", "eval_top1": 70.0},
    ]
    rows = []
    for i, spec in enumerate(specs):
        row = {"run": i, **base, **spec}
        rows.append(row | {"reproduced": reproduced(row)})
    return rows


def test_the_verdict_survives_the_report_csv(tmp_path):
    writer = ReportWriter(tmp_path / "r.csv", TRAIN)
    for row in _rows():
        writer.append(row)
    frame = read_report(tmp_path / "r.csv")
    assert frame["reproduced"].tolist() == ["yes", "no", "no", "n/a"]  # "n/a" is not read as NaN
    assert [reproduced(r) for r in frame.to_dict("records")] == ["yes", "no", "no", "n/a"]
    assert frame["reference_source"].tolist()[:3] == ["JR paper, Table 2"] * 3


def _text(table) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_the_summary_table_marks_each_run_and_names_the_figure():
    rows = _rows()
    table = train_table(rows, TRAIN_KEYS)
    column = next(c for c in table.columns if c.header == "reproduced")
    assert list(column.cells) == ["yes ✓", "no ✗", "no ✗", "n/a"]
    assert table.caption == "reproduced: top-1 within 0.5 of 75.4 % (JR paper, Table 2)"
    assert "reproduced: top-1 within 0.5 of 75.4 % (JR paper, Table 2)" in _text(table)
    # without any figure there is no column and no caption
    plain = [{k: v for k, v in r.items() if not k.startswith("reference_")} for r in rows]
    table = train_table([r | {"reproduced": "n/a"} for r in plain], TRAIN_KEYS)
    assert "reproduced" not in [c.header for c in table.columns] and table.caption is None


def test_the_caption_lists_each_distinct_figure_once():
    rows = [{**TOP1}, {**TOP1}, {**MIOU, "reference_value": 75.15}, {"reference_metric": ""}]
    assert caption(rows) == (
        "reproduced: top-1 within 0.5 of 75.4 % (JR paper, Table 2); "
        "mIoU within 1 of 75.15 % (MDEQ paper)"
    )
    assert caption([{"status": "completed"}]) is None
    assert [mark({"reproduced": v}) for v in ("yes", "no", "n/a", None)] == [
        "yes ✓",
        "no ✗",
        "n/a",
        "–",
    ]


def _report(tmp_path, name: str, top1: list[float], status: list[str]) -> str:
    """A training report of two runs (broyden, anderson) against the figure 75.4 ± 0.5."""
    rows = []
    for i, (solver, t, s) in enumerate(zip(("broyden", "anderson"), top1, status, strict=True)):
        row = dict.fromkeys(TRAIN_COLUMNS) | {"run": i, "suite": "s", "kind": "train"}
        row |= {"model": "mdeq-cpu-small", "dataset": "digits", "solver": solver}
        row |= {"gradient": "ift", "seed": 0, "status": s, "eval_top1": t, **TOP1}
        rows.append(row | {"reproduced": reproduced(row)})
    path = tmp_path / name
    pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)).to_csv(path, index=False)
    return str(path)


def test_compare_shows_each_sides_mark(cli, tmp_path):
    a = _report(tmp_path, "a.csv", [75.3, 74.0], ["completed", "completed"])
    b = _report(tmp_path, "b.csv", [73.0, 75.6], ["completed", "completed"])
    result = cli.invoke(main, ["compare", a, b, "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert "| status | reproduced | top-1 Δpt |" in header
    broyden = next(line for line in lines if "| broyden |" in line)
    anderson = next(line for line in lines if "| anderson |" in line)
    assert "| yes ✓ → no ✗ |" in broyden and "| -2.30 ✗ |" in broyden
    assert "| no ✗ → yes ✓ |" in anderson
    csv = cli.invoke(main, ["compare", a, b, "--format", "csv"])
    frame = pd.read_csv(io.StringIO(csv.stdout), keep_default_na=False, na_values=[""])
    assert frame[["solver", "reproduced_a", "reproduced_b"]].values.tolist() == [
        ["broyden", "yes", "no"],
        ["anderson", "no", "yes"],
    ]
    same = cli.invoke(main, ["compare", a, a, "--format", "markdown"])
    assert "| yes ✓ |" in same.stdout and "→" not in same.stdout.split("reproduced")[-1]
