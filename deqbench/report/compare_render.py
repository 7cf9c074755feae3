"""Showing a `deqbench.report.compare.Comparison`: a rich table, a markdown table, or CSV text.

Every format holds the same facts: the matched runs with each metric B / A (or B − A in points),
what got worse marked ``✗``, accuracy differences within noise marked ``≈``, figures a run
flagged noisy marked ``!`` (never judged), status changes, the runs present on one side only,
and a summary.
"""

from __future__ import annotations

import json
import math

import pandas as pd
from rich.table import Table

from deqbench.report import reference
from deqbench.report.compare import Comparison

#: Identity columns always shown (when present); others only where rows differ.
_ALWAYS = ("problem", "model", "solver", "gradient")
WORSE = "✗"
NOISE = "≈"
#: The legend of ``≈``, printed under a comparison that has one.
NOISE_NOTE = (
    f"{NOISE}: within noise, never counted as worse: A's and B's 95 % intervals overlap (the "
    "Wilson interval over the images evaluated; with seed repeats on both sides, also the t "
    "interval of the seed mean). It does not show the two equal, only that these "
    "measurements cannot rank them."
)
NOISY = "!"


def noisy_note(count: int) -> str:
    """The legend of ``!``: how many figures the regression check left out."""
    return (
        f"{NOISY}: flagged noisy by its run on side A or B (IQR over 10 % of the median): "
        f"never counted as worse, nor by --fail-on-regression; {count} noisy figure(s) "
        "excluded. Rerun them on a quieter machine or with more repeats to judge them."
    )


def _text(value: object) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = str(value)
    if text.startswith("{"):  # options JSON, shown as k=v
        try:
            return " ".join(f"{k}={v}" for k, v in json.loads(text).items()) or "–"
        except ValueError:
            return text
    return text


def shown_keys(cmp: Comparison) -> list[str]:
    """The key columns worth a reader's eye: the naming ones, and those that vary."""
    rows = pd.concat([cmp.table, cmp.only_a, cmp.only_b], ignore_index=True)
    out = []
    for key in cmp.keys:
        values = {_text(v) for v in rows[key]} - {"–"} if key in rows else set()
        # empty for explicit rows: not varying; the pair's "B / A" always shows
        if values and (key in _ALWAYS or key == cmp.pair or len(values) > 1):
            out.append(key)
    return out or cmp.keys[:1]


def _figure(value: float, points: bool) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:+.2f}" if points else f"{value:.3g}"


def _status(row: pd.Series) -> str:
    a, b = _text(row["status_a"]), _text(row["status_b"])
    if a == b:
        return a
    return f"{a} → {b}" + (f" ({row['change']})" if row["change"] else "")


def rows(cmp: Comparison) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and cells ``(text, worse)`` of the matched runs."""
    keys = shown_keys(cmp)
    headers = [f"{k} (B / A)" if k == cmp.pair else k for k in keys]
    # training reports with a [reference] figure: each side's verdict
    verdicts = any(reference.judged(cmp.table.get(f"reproduced_{s}", ())) for s in "ab")
    headers += ["status", *(["seeds n"] if cmp.seeds else []), *(["reproduced"] * verdicts)]
    for m in cmp.metrics:
        headers.append(f"{m.label} Δpt" if m.points else f"{m.label} b/a")
    body = []
    for _, row in cmp.table.iterrows():
        worse = set(row["worse"].split(";")) if row["worse"] else set()
        noise = set(row["noise"].split(";")) if row["noise"] else set()
        noisy = set(row["noisy"].split(";")) if row["noisy"] else set()
        cells = [(_text(row[k]), False) for k in keys]
        cells.append((_status(row), "newly failed" in worse))
        if cmp.seeds:  # completed runs behind each side's mean
            n_a, n_b = int(row["n_a"]), int(row["n_b"])
            cells.append((str(n_a) if n_a == n_b else f"{n_a} → {n_b}", False))
        if verdicts:
            cells.append(_reproduced(row))
        for m in cmp.metrics:
            col = f"{m.name}_diff" if m.points else f"{m.name}_ratio"
            bad = m.name in worse
            mark = f" {WORSE}" if bad else f" {NOISE}" if m.name in noise else ""
            mark = f" {NOISY}" if m.name in noisy else mark
            cells.append((_figure(float(row[col]), m.points) + mark, bad))
        body.append(cells)
    return headers, body


def _reproduced(row: pd.Series) -> tuple[str, bool]:
    """Each side's ``reproduced`` mark, ``yes ✓`` or ``yes ✓ → no ✗`` (red: B lost it)."""
    a, b = (reference.mark({"reproduced": row[f"reproduced_{s}"]}) for s in "ab")
    return (a if a == b else f"{a} → {b}"), a == reference.MARKS["yes"] and b != a


def one_sided(cmp: Comparison) -> list[tuple[str, pd.DataFrame]]:
    """``(side name, runs)`` for each side that has runs the other lacks."""
    return [
        (name, frame)
        for name, frame in zip(cmp.names, (cmp.only_a, cmp.only_b), strict=True)
        if len(frame)
    ]


def summary(cmp: Comparison) -> str:
    """One line: matched, worse, within noise (when any), newly failed, fixed, one-sided."""
    change = cmp.table["change"] if len(cmp.table) else pd.Series(dtype=str)
    matched = "configurations matched (seed means)" if cmp.seeds else "runs matched"
    parts = [
        f"{len(cmp.table)} {matched}",
        f"{cmp.regressions} got worse",
        *([f"{cmp.within_noise} within noise"] if cmp.within_noise else []),
        *([f"{cmp.noisy} noisy figure(s) not judged"] if cmp.noisy else []),
        f"{int((change == 'newly failed').sum())} newly failed",
        f"{int((change == 'fixed').sum())} fixed",
    ]
    for name, frame in zip(cmp.names, (cmp.only_a, cmp.only_b), strict=True):
        parts.append(f"{len(frame)} only in {name}")
    return ", ".join(parts)


def _title(cmp: Comparison) -> str:
    a, b = cmp.names
    title = (
        f"{b} (B) against {a} (A): costs as B / A, accuracy as B − A in points; {WORSE} got worse"
    )
    title += f"; {NOISE} within noise" if cmp.within_noise else ""
    return title + (f"; {NOISY} noisy, not judged" if cmp.noisy else "")


def _notes(cmp: Comparison) -> list[str]:
    """Lines printed under the tables: the ``≈`` and ``!`` legends when a cell has one."""
    return [NOISE_NOTE] * bool(cmp.within_noise) + [noisy_note(cmp.noisy)] * bool(cmp.noisy)


def to_rich(cmp: Comparison) -> list[Table | str]:
    """Renderables for a rich console, in order."""
    headers, body = rows(cmp)
    table = Table(title=_title(cmp))
    figures = len(headers) - len(cmp.metrics)
    for i, header in enumerate(headers):  # keys and status stay whole; figure headers wrap
        table.add_column(header, no_wrap=i < figures, overflow="fold")
    for cells in body:
        table.add_row(*(f"[bold red]{t}[/]" if bad else t for t, bad in cells))
    out: list[Table | str] = [table]
    keys = shown_keys(cmp)
    for name, frame in one_sided(cmp):
        side = Table(*keys, "status", title=f"only in {name}")
        for _, row in frame.iterrows():
            side.add_row(*(_text(row[k]) for k in keys), _text(row["status"]))
        out.append(side)
    return [*out, *_notes(cmp), summary(cmp)]


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_markdown(cmp: Comparison) -> str:
    """A GitHub-flavoured markdown section: the table, one-sided runs, the summary."""
    headers, body = rows(cmp)
    lines = [f"**{_title(cmp)}**", "", _md_row(headers), _md_row(["---"] * len(headers))]
    lines += [_md_row([t for t, _ in cells]) for cells in body]
    keys = shown_keys(cmp)
    for name, frame in one_sided(cmp):
        lines += ["", f"**only in {name}**", "", _md_row([*keys, "status"])]
        lines.append(_md_row(["---"] * (len(keys) + 1)))
        for _, row in frame.iterrows():
            lines.append(_md_row([*(_text(row[k]) for k in keys), _text(row["status"])]))
    notes = [line for note in _notes(cmp) for line in ("", note)]
    return "\n".join([*lines, *notes, "", summary(cmp)]) + "\n"


def to_csv(cmp: Comparison) -> str:
    """Every matched run (a, b and ratio/diff columns, ``worse``, ``noise``) then the
    one-sided runs, with ``side`` = both | only a | only b."""
    return cmp.frame().to_csv(index=False)


#: The title and the legends under the tables, for renderers elsewhere (`deqbench.report.html`).
title = _title
notes = _notes
