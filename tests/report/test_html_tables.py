"""`deqbench.report.html_tables`: a rich table read back cell by cell, and a failed run's error
cut to one line with the whole text kept as its tooltip."""

from __future__ import annotations

from rich.table import Table

from deqbench.report.html_tables import ERROR_CHARS, _error_cell, from_rich


def test_from_rich_keeps_headers_cells_rows_and_their_colours():
    table = Table(title="t", caption="≈ within noise")
    table.add_column("solver")
    table.add_column("top-1 %")
    table.add_row("anderson", "91.5")
    table.add_row("broyden", "–", style="red")
    table.add_row("fixed-point", "90 ≈", style="yellow")
    html = from_rich(table)
    assert html.headers == ["solver", "top-1 %"]
    assert [[c.text for c in row] for row in html.rows] == [
        ["anderson", "91.5"],
        ["broyden", "–"],
        ["fixed-point", "90 ≈"],
    ]
    assert html.row_classes == ["", "failed", "warn"]
    assert (html.title, html.caption) == ("t", "≈ within noise")


def test_error_cell_first_line_cut_whole_text_in_tooltip():
    long = "x" * (ERROR_CHARS + 40)
    cell = _error_cell({"error": f"{long}\nTraceback line"})
    assert cell.text == "x" * (ERROR_CHARS - 1) + "…" and len(cell.text) == ERROR_CHARS
    assert cell.title == f"{long}\nTraceback line" and cell.cls == "bad"
    short = _error_cell({"error": "CUDA out of memory"})
    assert (short.text, short.title) == ("CUDA out of memory", "")
    assert _error_cell({"error": float("nan")}).text == "–"
