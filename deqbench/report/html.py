"""A report as one self-contained HTML page (``deqbench report REPORT.csv --html out.html``).

The page holds the kind's summary tables (sortable, failed runs marked with their error, the
``reproduced`` marks when the report has them), every plot of `deqbench.report.plot` embedded
as a PNG data URI, the convergence traces (``REPORT.traces.csv``), the environment
(``REPORT.meta.json``, flattened) and, given a second report, the comparison of
`deqbench.report.compare`. Nothing is fetched at view time: styles and the sorting script are
inline. The page is rendered by jinja2, autoescaped, from ``templates/report.html.j2``.
"""

from __future__ import annotations

import base64
import datetime
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from deqbench.errors import ConfigError
from deqbench.plugins import get_run_kind
from deqbench.report.html_tables import comparison, summary_tables, traces_table
from deqbench.report.matching import load_report, report_kind
from deqbench.report.plot import plot_report
from deqbench.report.results import companion


@dataclass
class Page:
    """What `write_html` wrote: the file, runs shown, plots embedded and plots skipped."""

    path: Path
    runs: int
    plots: int
    skipped: list[str]


def plots(report: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every plot of the report as ``{name, runs, uri}`` (a base64 PNG data URI), drawn into a
    temporary folder, and the plots skipped as ``{name, note}``."""
    drawn, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="deqbench-html-") as tmp:
        for plot in plot_report(report, tmp):
            if plot.path is None:
                skipped.append({"name": plot.name, "note": plot.note})
                continue
            data = base64.b64encode(Path(plot.path).read_bytes()).decode("ascii")
            drawn.append(
                {"name": plot.name, "runs": plot.runs, "uri": f"data:image/png;base64,{data}"}
            )
    return drawn, skipped


def flatten(meta: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted keys → text (lists and other values as JSON; ``null`` kept)."""
    out: list[tuple[str, str]] = []
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += flatten(value, name + ".")
        elif isinstance(value, str):
            out.append((name, value))
        else:
            out.append((name, json.dumps(value, default=str, ensure_ascii=False)))
    return out


def read_meta(report: Path) -> dict[str, Any] | str:
    """The ``.meta.json`` companion, or a note why there is none."""
    path = companion(report, "meta.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no environment: {path.name} is not beside the report"
    except (OSError, ValueError) as exc:
        return f"{path.name}: unreadable ({exc})"
    return meta if isinstance(meta, dict) else f"{path.name}: not a JSON object"


def _heading(meta: dict[str, Any] | str) -> tuple[str, str]:
    """The suite's name and description, as the metadata records them."""
    if isinstance(meta, str):
        return "", ""
    spec = meta.get("spec")
    table = spec.get("suite") if isinstance(spec, dict) else None
    about = table.get("description") if isinstance(table, dict) else None
    return str(meta.get("suite") or ""), str(about or "")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("deqbench.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render(
    report: str | Path,
    other: str | Path | None = None,
    factor: float = 1.1,
    drop: float = 1.0,
) -> tuple[str, Page]:
    """The HTML page of ``report`` (compared against ``other`` when given) and its summary
    (its ``path`` is the report's until written)."""
    report = Path(report)
    frame = load_report(report)
    kind = report_kind(frame, str(report))
    tables, warnings = summary_tables(frame, kind)
    drawn, skipped = plots(report)
    spec = get_run_kind(kind)
    failed = sum(spec.is_failed(r) for r in frame.to_dict("records"))
    meta = read_meta(report)
    suite, description = _heading(meta)
    context = {
        "report": report.name,
        "suite": suite,
        "description": description,
        "kind": spec.title,
        "runs": len(frame),
        "failed": failed,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tables": tables,
        "warnings": warnings,
        "plots": drawn,
        "skipped": skipped,
        "traces": traces_table(report, frame, kind),
        "environment": meta if isinstance(meta, str) else flatten(meta),
        "compare": comparison(report, frame, Path(other), factor, drop) if other else None,
    }
    text = _environment().get_template("report.html.j2").render(**context)
    return text, Page(report, len(frame), len(drawn), [s["name"] for s in skipped])


def write_html(
    report: str | Path,
    out: str | Path,
    other: str | Path | None = None,
    factor: float = 1.1,
    drop: float = 1.0,
) -> Page:
    """Render ``report`` (against ``other``) and write the page to ``out``; a missing report
    or an unwritable ``out`` is one `ConfigError` line."""
    out = Path(out)
    for path in (report, *([other] if other else [])):
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such report file")
    if out.is_dir():
        raise ConfigError(f"--html {out}: is a folder; give an .html file path")
    text, page = render(report, other, factor, drop)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--html {out}: cannot write ({exc.strerror or exc})") from None
    page.path = out
    return page
