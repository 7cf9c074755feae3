"""``deqbench report``: a report as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from deqbench.cli.app import console, main
from deqbench.cli.reports import mark_options


@main.command()
@click.argument("report", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (default: REPORT.html beside the report).",
)
@click.option(
    "--compare",
    "other",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="OTHER.csv",
    help="Add a compare section: OTHER (B) against REPORT (A), as deqbench compare shows it.",
)
@mark_options("with --compare, ")
def report(
    report: Path, html_out: Path | None, other: Path | None, factor: float, drop: float
) -> None:
    """Write REPORT.csv as one HTML file that needs no network: the sortable summary table
    (failed runs with their error), every plot embedded, the convergence traces, the
    environment (.meta.json) and, with --compare, the comparison of two reports."""
    from deqbench.report.html import write_html

    out = html_out or report.with_suffix(".html")
    page = write_html(report, out, other, factor=factor, drop=drop)
    skipped = f", {len(page.skipped)} skipped" if page.skipped else ""
    console.print(
        f"wrote {page.path} ({page.runs} runs, {page.plots} plots embedded{skipped})",
        highlight=False,
    )
