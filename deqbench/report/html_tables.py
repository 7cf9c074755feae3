"""The tables of the HTML report (`deqbench.report.html`): a kind's summary tables with the run
index, failed runs' errors and the ``reproduced`` marks; the convergence traces; the comparison
of two reports. Each is an `HtmlTable` of `Cell` s, which the template renders and sorts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from deqbench.errors import ConfigError
from deqbench.plugins import get_run_kind
from deqbench.report import compare_render, reference
from deqbench.report.compare import Comparison, compare
from deqbench.report.matching import canon, load_report, meta_differences
from deqbench.report.results import companion, read_report

#: Characters of a failed run's error shown in its cell (the whole text is its tooltip).
ERROR_CHARS = 160
#: A ``reproduced`` mark → its cell's class.
_MARK_CLASS = {reference.MARKS[reference.YES]: "good", reference.MARKS[reference.NO]: "bad"}


@dataclass
class Cell:
    """One table cell: its text, a CSS class (``bad``, ``good``, ``warn``) and a tooltip."""

    text: str
    cls: str = ""
    title: str = ""


@dataclass
class HtmlTable:
    """A sortable table: headers, rows of cells and each row's class (``failed``, ``warn``)."""

    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)
    title: str = ""
    caption: str = ""


def _blank(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _plain(value: object) -> str:
    """A rich cell or title as plain text."""
    if value is None:
        return ""
    return value.plain if isinstance(value, Text) else str(value)


def _row_class(style: object) -> str:
    text = str(style or "")
    return "failed" if "red" in text else "warn" if "yellow" in text else ""


def from_rich(table: Table) -> HtmlTable:
    """A rich table (a kind's summary) as an `HtmlTable`: headers, cells, title, caption, and
    its red / yellow rows as ``failed`` / ``warn``."""
    columns = [[_plain(c) for c in column.cells] for column in table.columns]
    rows = [[Cell(col[i]) for col in columns] for i in range(table.row_count)]
    return HtmlTable(
        headers=[_plain(c.header) for c in table.columns],
        rows=rows,
        row_classes=[_row_class(r.style) for r in table.rows],
        title=_plain(table.title),
        caption=_plain(table.caption),
    )


def _error_cell(row: Mapping[str, Any]) -> Cell:
    error = "" if _blank(row.get("error")) else str(row["error"]).strip()
    first = error.splitlines()[0] if error else ""
    short = first if len(first) <= ERROR_CHARS else first[: ERROR_CHARS - 1] + "…"
    return Cell(short or "–", "bad" if error else "", error if error != short else "")


def _mark_reproduced(table: HtmlTable, column: int) -> None:
    """Colour the ``reproduced`` marks of ``table``'s ``column``: yes green, no red."""
    for cells in table.rows:
        cells[column].cls = _MARK_CLASS.get(cells[column].text, cells[column].cls)


def _went_well(spec: Any, row: Mapping[str, Any]) -> bool:
    """Whether ``row``'s status is one its kind calls ok (any that is not failed, when the kind
    names none)."""
    return row.get("status") in spec.ok if spec.ok else not spec.is_failed(row)


def summary_tables(frame: pd.DataFrame, kind: str) -> tuple[list[HtmlTable], list[str]]:
    """The kind's summary tables of the report's rows (the ones ``deqbench run`` prints) and
    its warnings. The first gets the run index, a ``reproduced`` column when the report has
    one, and the error of each failed run; failed rows are classed ``failed``."""
    spec = get_run_kind(kind)
    rows = frame.to_dict("records")
    tables = [from_rich(t) for t in spec.summary(rows) if isinstance(t, Table)]
    if not tables or len(tables[0].rows) != len(rows):
        tables.insert(0, _plain_table(frame))
    main = tables[0]
    extra: dict[str, list[Cell]] = {}
    if "run" in frame and "run" not in main.headers:
        main.headers.insert(0, "run")
        for cells, row in zip(main.rows, rows, strict=True):
            cells.insert(0, Cell(canon(row.get("run")) or "–"))
    # the kind's table shows reproduced when a run has a reference figure; a report that
    # holds verdicts without that table's column gets one here
    if "reproduced" not in main.headers and reference.judged(frame.get("reproduced", ())):
        extra["reproduced"] = [Cell(reference.mark(r)) for r in rows]
    failed = [not _went_well(spec, r) for r in rows]
    if "error" in frame and any(failed):
        cells = [_error_cell(r) if f else Cell("–") for r, f in zip(rows, failed, strict=True)]
        extra["error"] = cells
    for header, cells in extra.items():
        main.headers.append(header)
        for line, cell in zip(main.rows, cells, strict=True):
            line.append(cell)
    if "reproduced" in main.headers:
        _mark_reproduced(main, main.headers.index("reproduced"))
    main.row_classes = [
        "failed" if spec.is_failed(r) else "" if _went_well(spec, r) else "warn" for r in rows
    ]
    return tables, list(spec.warnings(rows))


def _plain_table(frame: pd.DataFrame) -> HtmlTable:
    """Every column that any row fills: for a kind whose summary has no row per run."""
    shown = [c for c in frame.columns if frame[c].map(lambda v: not _blank(v)).any()]
    rows = [[Cell("–" if _blank(v) else canon(v)) for v in r] for r in frame[shown].values]
    return HtmlTable(headers=[str(c) for c in shown], rows=rows, row_classes=[""] * len(rows))


def _number(value: object) -> str:
    return "–" if _blank(value) else f"{float(value):.2e}"


#: Identity columns shown by value alone in a run's label; others read ``key=value``.
_NAMES = ("problem", "model", "head", "dataset", "cell", "solver", "gradient")


def _value(key: str, value: object) -> str:
    text = canon(value)
    if text.startswith("{"):  # options JSON as k=v pairs; "{}" says nothing
        try:
            return " ".join(f"{k}={v}" for k, v in json.loads(text).items())
        except ValueError:
            return text
    return text if key in _NAMES or not text else f"{key}={text}"


def _labels(frame: pd.DataFrame, kind: str, runs: set[int]) -> dict[int, str]:
    """Each of ``runs``' identity columns whose values differ between them, as ``a · b``."""
    frame = frame[frame["run"].isin(runs)]
    keys = [k for k in get_run_kind(kind).keys if k in frame]
    varying = [k for k in keys if frame[k].map(canon).nunique() > 1] or keys[:1]
    labels = {}
    for _, row in frame.iterrows():
        parts = [_value(k, row[k]) for k in varying]
        labels[int(row["run"])] = " · ".join(p for p in parts if p) or "–"
    return labels


def traces_table(report: Path, frame: pd.DataFrame, kind: str) -> HtmlTable | str:
    """One row per traced run: its last step's residuals and the median relative residual at
    every step; a note (str) when the report has no traces."""
    path = companion(report, "traces.csv")
    if not path.exists():
        return f"no convergence traces: {path.name} is not beside the report"
    try:
        traces = read_report(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return f"{path.name}: unreadable, traces not shown"
    if traces.empty or not {"run", "step"} <= set(traces.columns):
        return f"{path.name} holds no traces"
    traced = {int(r) for r in traces["run"].dropna()}
    labels = _labels(frame, kind, traced) if "run" in frame else {}
    table = HtmlTable(
        headers=["run", "configuration", "steps", "final rel res (median)",
                 "final rel res (max)", "final abs res (median)", "rel res median per step"]
    )  # fmt: skip
    for run, steps in traces.sort_values(["run", "step"]).groupby("run", sort=True):
        last = steps.iloc[-1]
        per_step = " ".join(_number(v) for v in steps.get("rel_residual_median", []))
        table.rows.append(
            [
                Cell(str(int(run))),
                Cell(labels.get(int(run), "–")),
                Cell(str(len(steps))),
                Cell(_number(last.get("rel_residual_median"))),
                Cell(_number(last.get("rel_residual_max"))),
                Cell(_number(last.get("abs_residual_median"))),
                Cell(per_step, "trace"),
            ]
        )
        table.row_classes.append("")
    return table


def comparison(
    report: Path, frame: pd.DataFrame, other: Path, factor: float, drop: float
) -> dict[str, Any]:
    """The comparison of ``other`` (B) against ``report`` (A) as `compare` and
    `deqbench.report.compare_render` show it: the table with its marks, one-sided runs,
    notes (matching, environments that differ, the ``≈`` legend) and the summary line."""
    names = (str(report), str(other))
    cmp: Comparison = compare(frame, load_report(other), names=names, factor=factor, drop=drop)
    if cmp.table.empty:  # refused, as deqbench compare refuses it
        raise ConfigError(
            f"--compare: {names[0]} and {names[1]} have no runs in common ({len(cmp.only_a)} "
            f"runs only in {names[0]}, {len(cmp.only_b)} only in {names[1]}; matched on "
            f"{', '.join(cmp.keys)})"
        )
    headers, body = compare_render.rows(cmp)
    table = HtmlTable(headers=headers)
    for cells in body:
        table.rows.append([Cell(t, "bad" if worse else "") for t, worse in cells])
        table.row_classes.append("")
    keys = compare_render.shown_keys(cmp)
    sides = []
    for name, runs in compare_render.one_sided(cmp):
        side = HtmlTable(headers=[*keys, "status"], title=f"only in {name}")
        for _, row in runs.iterrows():
            cells = [*(row.get(k) for k in keys), row.get("status")]
            side.rows.append([Cell("–" if _blank(v) or v == "" else str(v)) for v in cells])
            side.row_classes.append("")
        sides.append(side)
    notes = [*meta_differences(report, other), *cmp.notes, *compare_render.notes(cmp)]
    return {
        "a": names[0],
        "b": names[1],
        "table": table,
        "sides": sides,
        "notes": notes,
        "summary": compare_render.summary(cmp),
        "title": compare_render.title(cmp),
    }
