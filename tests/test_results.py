"""The report files: documented columns, append-safe rows, metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deqbench.results import COLUMNS, TRACE_COLUMNS, ReportWriter, read_report

README = Path(__file__).resolve().parents[1] / "reports" / "README.md"


def test_reports_readme_documents_every_column():
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", README.read_text(), re.M))
    assert set(COLUMNS) | set(TRACE_COLUMNS) <= documented
    assert documented <= set(COLUMNS) | set(TRACE_COLUMNS), "README documents stale columns"


def test_rows_are_appended_with_a_single_header(tmp_path):
    writer = ReportWriter(tmp_path / "r.csv")
    writer.append({"run": 0, "status": "converged", "nfe": 3}, [{"run": 0, "step": 0}])
    writer.append({"run": 1, "status": "error", "error": "boom, with a comma"})
    frame = read_report(tmp_path / "r.csv")
    assert list(frame.columns) == list(COLUMNS)
    assert frame["run"].tolist() == [0, 1] and frame["error"].tolist()[1] == "boom, with a comma"
    assert frame["nfe"].isna().tolist() == [False, True]  # failed runs leave metrics empty
    assert (tmp_path / "r.traces.csv").read_text().count("run,step") == 1


def test_undocumented_column_is_refused(tmp_path):
    with pytest.raises(KeyError, match="undocumented"):
        ReportWriter(tmp_path / "r.csv").append({"run": 0, "speed": 1})


def test_meta_is_json(tmp_path):
    writer = ReportWriter(tmp_path / "r.csv")
    writer.write_meta({"torch": "x"})
    assert json.loads((tmp_path / "r.meta.json").read_text()) == {"torch": "x"}
