"""What every plot shares: the report being drawn (`Source`), the figure with its legend below
the axes and a footer naming the report, and writing the PNG (`Drawn`).

The figure is two stacked subfigures: the panels on top, at a fixed size, and beneath them an
area sized to the legend, so a long legend makes the figure taller instead of squashing the
axes. The legend lists one entry per run or configuration, in as many columns as fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.textpath import TextPath

from deqbench.errors import ConfigError
from deqbench.plugins import get_run_kind
from deqbench.report.matching import report_kind
from deqbench.report.plot_labels import blank, run_labels
from deqbench.report.plot_style import Style, styles
from deqbench.report.results import companion, read_report

#: Legend entries drawn at most; the rest are counted in a last entry.
LEGEND_MAX = 48
_PANEL = (6.4, 4.6)  #: inches of one panel
_FONT = 7  #: legend and footer font size (points)
_ENTRY_IN = 0.5  #: an entry's width besides its text: handle, padding, column spacing
_ROW_IN = 0.155  #: height of one legend row (inches)
_FOOTER_IN = 0.25


@dataclass(frozen=True)
class Drawn:
    """One plot: where it was written, or why it was skipped (``path`` None)."""

    name: str
    path: Path | None
    note: str = ""
    runs: int = 0  #: runs drawn (points, lines or baselines)


class Source:
    """The report being drawn: its rows, run labels and styles, and its companion files."""

    def __init__(self, path: Path, frame: pd.DataFrame) -> None:
        self.path, self.frame = path, frame
        self.kind = report_kind(frame, str(path))
        self.suite = first_value(frame.get("suite"))
        self.labels = run_labels(frame, self.kind)
        # One style per run, the same in every plot of the report.
        self.styles: dict[int, Style] = dict(
            zip(sorted(self.labels), styles(len(self.labels)), strict=True)
        )

    def label(self, run: object) -> str:
        return self.labels.get(int(run), f"run {int(run)}")

    def style(self, run: object) -> Style:
        return self.styles.get(int(run)) or styles(1)[0]

    def failed(self) -> int:
        ok = [str(status) for status in get_run_kind(self.kind).ok]
        return int((~self.frame["status"].astype(str).isin(ok)).sum())

    def footer(self, left_out: int) -> str:
        text = f"report: {self.path}" + (f" (suite {self.suite})" if self.suite else "")
        text += f"; {len(self.frame)} runs"
        if left_out:
            text += f", {left_out} without data left out"
        failed = self.failed()
        return text + (f", {failed} failed" if failed else "")

    def companion(self, suffix: str) -> pd.DataFrame | None:
        path = companion(self.path, suffix)
        if not path.exists() or path.stat().st_size == 0:
            return None
        try:
            return read_report(path)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable CSV ({exc})") from None


def first_value(series: pd.Series | None) -> str:
    """The first non-blank value of a column, as text ('' when none)."""
    if series is None:
        return ""
    values = series.dropna().astype(str)
    return values.iloc[0] if len(values) else ""


def finite(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The rows whose ``columns`` all hold finite numbers."""
    numbers = frame[columns].apply(pd.to_numeric, errors="coerce")
    return frame[numbers.notna().all(axis=1) & (numbers.abs() != math.inf).all(axis=1)]


def explicit(frame: pd.DataFrame) -> pd.Series:
    """Explicit baselines leave the solver (and gradient) columns empty."""
    return frame["solver"].map(blank) if "solver" in frame else pd.Series(True, frame.index)


def _legend_shape(labels: list[str], width: float) -> tuple[int, int]:
    """(columns, rows) of a legend of ``labels`` across ``width`` inches."""
    if not labels:
        return 1, 0
    longest = max(TextPath((0, 0), label, size=_FONT).get_extents().width for label in labels)
    column = _ENTRY_IN + longest / 72  # points → inches
    columns = max(1, min(len(labels), int((width - 0.1) // column)))
    return columns, math.ceil(len(labels) / columns)


class Canvas:
    """A figure of ``nrows`` × ``ncols`` panels (``top``) with room below for a legend of
    ``entries`` labels and the footer."""

    def __init__(
        self, source: Source, title: str, left_out: int, entries: list[str], ncols=1, nrows=1
    ) -> None:
        width, height = _PANEL[0] * min(ncols, 3), _PANEL[1] * nrows
        shown = entries[:LEGEND_MAX] + (["…"] if len(entries) > LEGEND_MAX else [])
        self.runs = 0  #: runs drawn, set by the plot
        self.columns, rows = _legend_shape(shown, width)
        below = rows * _ROW_IN + _FOOTER_IN + (0.1 if rows else 0.0)
        self.figure = Figure(figsize=(width, height + below), layout="constrained")
        FigureCanvasAgg(self.figure)
        self.top, self.bottom = self.figure.subfigures(2, 1, height_ratios=[height, below])
        self.top.suptitle(title)
        self.bottom.text(0.01, 0.02, source.footer(left_out), fontsize=_FONT, va="bottom")

    def legend(self, handles: list, labels: list[str]) -> None:
        """The legend below the panels: at most `LEGEND_MAX` entries, then a count."""
        if not handles:
            return
        more = len(handles) - LEGEND_MAX
        handles, labels = list(handles[:LEGEND_MAX]), list(labels[:LEGEND_MAX])
        if more > 0:
            handles.append(Line2D([], [], ls="", marker=""))
            labels.append(f"… and {more} more not listed")
        self.bottom.legend(
            handles,
            labels,
            loc="upper center",
            ncols=self.columns,
            fontsize=_FONT,
            frameon=False,
            columnspacing=1.2,
            handlelength=2.6,  # long enough to show a line style
        )

    def save(self, out: Path, name: str) -> Drawn:
        path = out / f"{name}.png"
        self.figure.savefig(path, dpi=100)
        return Drawn(name, path, runs=self.runs)


def save(name: str, built: Canvas | str, out: Path) -> Drawn:
    """Write ``built`` as ``out/<name>.png``; a note (why there is no plot) is recorded."""
    if isinstance(built, str):
        return Drawn(name, None, built)
    return built.save(out, name)
