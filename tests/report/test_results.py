"""The report files: documented columns, append-safe rows, metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deqbench.plugins import get_registry
from deqbench.report.results import ReportWriter, read_report
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.solve.columns import COLUMNS
from deqbench.runs.solve.kind import SOLVE
from deqbench.runs.train.columns import EVAL_COLUMNS, STEP_COLUMNS, TRAIN_COLUMNS
from deqbench.runs.train.kind import TRAIN

README = Path(__file__).resolve().parents[2] / "reports" / "README.md"


def test_reports_readme_documents_every_column():
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", README.read_text(), re.M))
    every = set(COLUMNS) | set(TRACE_COLUMNS) | set(TRAIN_COLUMNS) | set(STEP_COLUMNS)
    every |= set(EVAL_COLUMNS)
    kinds = [entry.obj for entry in get_registry().entries(["run_kinds"])]
    schema = {c for k in kinds for table in (k.columns, *k.companions.values()) for c in table}
    assert schema == every  # every registered kind's columns and companion columns
    assert every <= documented
    assert documented <= every, "README documents stale columns"


def test_rows_are_appended_with_a_single_header(tmp_path):
    writer = ReportWriter(tmp_path / "r.csv", SOLVE)
    writer.append(
        {"run": 0, "status": "converged", "nfe": 3}, {"traces.csv": [{"run": 0, "step": 0}]}
    )
    writer.append({"run": 1, "status": "error", "error": "boom, with a comma"})
    frame = read_report(tmp_path / "r.csv")
    assert list(frame.columns) == list(COLUMNS)
    assert frame["run"].tolist() == [0, 1] and frame["error"].tolist()[1] == "boom, with a comma"
    assert frame["nfe"].isna().tolist() == [False, True]  # failed runs leave metrics empty
    assert (tmp_path / "r.traces.csv").read_text().count("run,step") == 1


def test_undocumented_column_is_refused(tmp_path):
    with pytest.raises(KeyError, match="undocumented"):
        ReportWriter(tmp_path / "r.csv", SOLVE).append({"run": 0, "speed": 1})


def test_meta_is_json(tmp_path):
    writer = ReportWriter(tmp_path / "r.csv", SOLVE)
    writer.write_meta({"torch": "x"})
    assert json.loads((tmp_path / "r.meta.json").read_text()) == {"torch": "x"}


def test_a_noisy_figure_is_flagged_in_the_csv_column_and_the_table(tmp_path):
    from deqbench.report.results import noisy_figures
    from deqbench.report.tables import results_table

    steady = {"solve_ms_median": 10.0, "solve_ms_iqr": 0.5, "bare_ms_median": 5.0}
    steady |= {"bare_ms_iqr": 0.4, "overhead_per_nfe": 1.2, "overhead_iqr": 0.05}
    # issue 15's row: a bare loop timed on a loaded machine, spread over 10 × its median
    loaded = steady | {"bare_ms_median": 1168.0, "bare_ms_iqr": 1100.0, "overhead_per_nfe": 0.75}
    assert noisy_figures(steady) == ""
    assert noisy_figures(loaded) == "bare_ms_median"
    assert noisy_figures(steady | {"solve_ms_iqr": 1.01}) == "solve_ms_median"  # just over 10 %
    assert noisy_figures(steady | {"solve_ms_iqr": 0.99}) == ""
    assert noisy_figures({"solve_ms_median": float("nan"), "solve_ms_iqr": 3.0}) == ""
    writer = ReportWriter(tmp_path / "r.csv", SOLVE)
    base = {"problem": "p", "solver": "broyden", "status": "converged", "nfe": 10}
    for i, figures in enumerate((steady, loaded)):
        writer.append(base | figures | {"run": i, "noisy": noisy_figures(figures)})
    frame = read_report(tmp_path / "r.csv")
    assert frame["noisy"].fillna("").tolist() == ["", "bare_ms_median"]
    table = results_table(frame.to_dict("records"))
    overhead = next(c for c in table.columns if c.header == "×bare/NFE")
    assert list(overhead.cells) == ["1.2", "0.75!"]  # the ratio its noisy denominator skews


def test_the_cuda_device_name_is_asked_without_a_cuda_context_here():
    import torch

    from deqbench.execution.device import device_name

    if torch.cuda.is_initialized():
        pytest.skip("CUDA is already initialised in this process")
    name = device_name(torch.device("cuda:0"))
    assert not torch.cuda.is_initialized()  # a worker asked, so this process holds no context
    if torch.cuda.is_available():
        assert name  # the worker's answer
    else:
        assert name == ""  # no driver: the worker's error leaves the name empty


def test_the_report_has_its_header_from_the_suite_start(tmp_path):
    # a suite killed during its first run (a day-long ImageNet run) leaves a report to resume
    for kind, columns in ((SOLVE, COLUMNS), (TRAIN, TRAIN_COLUMNS)):
        writer = ReportWriter(tmp_path / f"{kind.name}.csv", kind)
        writer.write_meta({"torch": "x"})
        assert writer.path.read_text() == ",".join(columns) + "\n"
        writer.write_meta({"torch": "y"})  # written again (a resume): still one header
        writer.append({"run": 0, "status": "error"})
        assert read_report(writer.path)["run"].tolist() == [0]
