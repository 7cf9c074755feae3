"""The tables printed at the end of a suite: the columns a reader scans first (the CSV has
them all), with noisy figures marked ``!`` and figures within noise of the best marked ``≈``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.table import Table

from deqbench.report import reference, targets
from deqbench.report.cells import EMPTY, add_columns, fmt, option_value, options_text
from deqbench.report.noise import has_repeats, seed_groups, tied_with_best
from deqbench.report.results import noisy_figures
from deqbench.report.schema import RunStatus

#: The final table of a training suite: row key → title (columns no row fills are dropped).
_TRAIN = {
    "model": "model",
    "solver": "solver",
    "gradient": "gradient",
    "options": "options",
    "seed": "seed",
    "status": "status",
    "eval_top1": "top-1 %",
    "eval_top1_ci": "95 % CI",
    "eval_miou": "mIoU %",
    "eval_pixel_acc": "pixel %",
    "reproduced": "reproduced",
    "f_nfe_mean": "f NFE",
    "f_rel_residual_median_final": "f res",
    "b_nfe_mean": "b NFE",
    "grad_cosine_median": "grad cos",
    "step_ms_median": "step ms",
    "saved_mb": "saved MB",
    "peak_mb": "peak MB",
    "train_s": "train s",
    "time_to_target_s": "to target s",
}
#: Run options already shown in their own column.
_SHOWN_OPTIONS = ("model.name", "deq.solver", "deq.gradient")


def _train_cells(row: dict) -> dict:
    cells = dict(row)
    options = json.loads(row["options"]) if isinstance(row.get("options"), str) else {}
    rest = {k.split(".")[-1]: v for k, v in options.items() if k not in _SHOWN_OPTIONS}
    cells["options"] = ", ".join(f"{k}={option_value(v)}" for k, v in rest.items())
    cuda = row.get("peak_mem_mb")
    cells["peak_mb"] = cuda if _cell(cuda) != "–" else row.get("rss_peak_mb")
    low, high = row.get("eval_top1_ci_low"), row.get("eval_top1_ci_high")
    if _cell(low) != "–" and _cell(high) != "–":
        cells["eval_top1_ci"] = f"{low:.1f}–{high:.1f}"
    cosine = row.get("grad_cosine_median")
    if _cell(cosine) != "–":  # near 1 the digits that matter come late: 0.9998, not "1"
        cells["grad_cosine_median"] = f"{cosine:.4f}"
    cells.update(targets.row_cells(row))  # "not reached"
    cells["reproduced"] = reference.mark(row)  # yes ✓, no ✗, n/a
    return cells


def train_table(rows: list[dict], keys: Sequence[str]) -> Table:
    """The final table of a training suite (the CSV has every column). ``peak MB`` is the
    CUDA peak allocated, or the CPU run's peak resident memory; ``options`` and ``seed`` are
    shown only when they vary. ``f res`` is the median relative residual of the last training
    forward, ``grad cos`` the median cosine of the run's gradient checks against the exact
    implicit gradient. ``95 % CI`` is top-1's Wilson interval; without seed repeats
    (`seeds_table` judges those), a top-1 within noise of the best run's is marked ``≈``.
    ``reproduced`` marks each run against its published figure (`deqbench.report.reference`),
    named in the caption; shown when a run has one. ``keys``: the identity columns of the
    kind (runs differing only in seed repeat)."""
    cells = [_train_cells(r) for r in rows]
    shown = {
        k: v for k, v in _TRAIN.items() if any(_cell(c.get(k)) not in ("–", "") for c in cells)
    }
    for key in ("options", "seed"):
        if key in shown and len({_cell(c.get(key)) for c in cells}) < 2:
            del shown[key]
    if not any(reference.has_figure(r) for r in rows):
        shown.pop("reproduced", None)
    ok = [r for r in rows if r.get("status") == RunStatus.COMPLETED]
    repeats = has_repeats(_frame(rows), keys)
    tied = [False] * len(ok) if repeats else tied_with_best(ok, "eval_top1")
    done = (c for c in cells if c.get("status") == RunStatus.COMPLETED)
    for c, mark in zip(done, tied, strict=True):
        if mark:
            c["eval_top1"] = f"{_cell(c['eval_top1'])} ≈"
    tied_note = _tied_caption(ok, tied, "eval_top1", "run", "Wilson intervals")
    notes = [n for n in (tied_note, reference.caption(rows)) if n]
    table = Table(caption="\n".join(notes) or None)
    add_columns(table, shown.values(), text=_text(shown))
    colour = {RunStatus.COMPLETED: None, RunStatus.DIVERGED: "yellow"}
    for c in cells:
        table.add_row(*(_cell(c.get(k)) for k in shown), style=colour.get(c["status"], "red"))
    return table


def _frame(rows: list[dict]):
    import pandas as pd  # here: `deqbench --help` must not import pandas

    return pd.DataFrame(rows)


def _tied_caption(rows: list, tied: list[bool], figure: str, what: str, how: str) -> str | None:
    """The legend of the ``≈`` marks, naming the best figure; None when nothing is marked."""
    if not any(tied):
        return None
    label = {"eval_top1": "top-1", "eval_miou": "mIoU"}[figure]
    best = max(float(r.get(figure)) for r in rows if _cell(r.get(figure)) != "–")
    return f"≈ {label} within noise of the best {what}'s {best:.3g} % (their 95 % {how} overlap)"


#: Figures of the seeds table: row key → title; each shown as mean ± SD over the seeds.
_SEEDS = {
    "eval_top1": "top-1 %",
    "eval_miou": "mIoU %",
    "eval_pixel_acc": "pixel %",
    "f_nfe_mean": "f NFE",
    "b_nfe_mean": "b NFE",
    "step_ms_median": "step ms",
    "saved_mb": "saved MB",
    "peak_mb": "peak MB",
    "train_s": "train s",
}


def seeds_table(rows: list[dict], keys: Sequence[str]) -> Table | None:
    """With seed repeats (``[suite] repeats``), one row per configuration (runs that differ
    only in seed): ``n``, its completed runs (``2/3`` when one of 3 failed), and each headline
    figure as mean ± sample SD over them. The top-1 (else mIoU) of a configuration within
    noise of the best one's is marked ``≈``. None when no configuration has several seeds."""

    frame = _frame(rows)
    if not has_repeats(frame, keys):
        return None
    frame["peak_mb"] = [_train_cells(r)["peak_mb"] for r in rows]
    groups = seed_groups(frame, keys, [*_SEEDS, "eval_count"]).to_dict("records")
    names = [_train_cells(g) for g in groups]  # model, solver, gradient, options as text
    shown = {
        k: t
        for k, t in (("model", "model"), ("solver", "solver"), ("gradient", "gradient"))
        if any(_cell(c.get(k)) not in ("–", "") for c in names)
    }
    if len({c["options"] for c in names}) > 1:
        shown["options"] = "options"
    figures = {k: t for k, t in _SEEDS.items() if any(_cell(g.get(k)) != "–" for g in groups)}
    figure = next((f for f in ("eval_top1", "eval_miou") if f in figures), None)
    tied = tied_with_best(groups, figure) if figure else [False] * len(groups)
    how = "intervals, Wilson over the images evaluated or t over the seeds,"
    caption = _tied_caption(groups, tied, figure, "configuration", how) if figure else None
    target = targets.seeds_cells(frame, keys)  # reached k/n, median (min–max) to target
    note = f"; {targets.SEEDS_NOTE}" if target else ""
    table = Table(title=f"over seeds: mean ± SD of the completed runs{note}", caption=caption)
    add_columns(table, [*shown.values(), "n", *figures.values(), *target], text=_text(shown))
    for i, (group, name, mark) in enumerate(zip(groups, names, tied, strict=True)):
        n = f"{group['n']}" + (f"/{group['runs']}" if group["n"] < group["runs"] else "")
        spread = [_mean_sd(group, k) + (" ≈" if mark and k == figure else "") for k in figures]
        style = None if group["status"] == RunStatus.COMPLETED else "red"
        spread += [cells[i] for cells in target.values()]
        table.add_row(*(_cell(name.get(k)) for k in shown), n, *spread, style=style)
    return table


def _mean_sd(group: dict, figure: str) -> str:
    """``mean ± SD`` (the SD to 2 significant digits, or units from 10), the mean alone for
    one value."""
    mean, sd = group.get(figure), group.get(f"{figure}_sd")
    if _cell(mean) == "–":
        return "–"
    if _cell(sd) == "–":
        return fmt(mean)
    return f"{fmt(mean)} ± {sd:.0f}" if sd >= 10 else f"{fmt(mean)} ± {sd:.2g}"


# Run-defining columns, shown only when they differ between rows.
_SETTINGS = {
    "solver_options": "options",
    "max_iter": "max iter",
    "tol": "tol",
    "stop_mode": "stop",
    "gradient_options": "grad options",
}
_SOLVE = {
    "nfe": "NFE",
    "converged_frac": "conv.",
    "rel_residual_max": "rel res max",
    "solve_ms_median": "solve ms",
    "overhead_per_nfe": "×bare/NFE",
    "solver_mem_mb": "solver MB",
    "spectral_radius_median": "ρ(J)",
}
_GRADIENT = {
    "nfe": "NFE",
    "rel_residual_max": "rel res max",
    "forward_ms_median": "fwd ms",
    "backward_ms_median": "bwd ms",
    "b_nfe": "b NFE",
    "b_status": "b status",
    "grad_cosine": "grad cos",
    "grad_rel_error": "grad rel err",
    "saved_mb": "saved MB",
    "peak_mem_mb": "CUDA peak MB",
}


def _cell(value: object) -> str:
    """`deqbench.report.cells.fmt`, with options (stored as JSON) shown as ``k=v, k=v``."""
    return options_text(value)


#: Columns of names and settings, not figures: they may fold onto more lines.
_TEXT = ("model", "problem", "solver", "gradient", "options", "status", "b_status")
_TEXT += ("solver_options", "stop_mode", "gradient_options")


def _text(shown: dict[str, str]) -> list[str]:
    """The titles of ``shown``'s text columns."""
    return [title for key, title in shown.items() if key in _TEXT]


NOISY_NOTE = (
    "a figure marked ! spread too widely to trust (IQR over 10 % of its median; the CSV's "
    "noisy column names it): rerun it on a quieter machine or with more repeats"
)


def _noisy(row: dict) -> set[str]:
    listed = row.get("noisy")
    noisy = set((listed if isinstance(listed, str) else noisy_figures(row)).split())
    if "bare_ms_median" in noisy:  # the ratio's denominator: a noisy bare loop skews it
        noisy.add("overhead_per_nfe")
    return noisy


#: Timings of a solve row: those of a smoke run (its ``smoke`` column) are marked ``†``.
_TIMED = ("solve_ms_median", "overhead_per_nfe", "forward_ms_median", "backward_ms_median")
SMOKE_MARK = "†"
SMOKE_NOTE = (
    f"{SMOKE_MARK} a smoke run (--limit): timed from one unwarmed repeat, so these times show "
    "only that the runs work; run without --limit to measure them"
)


def results_table(rows: list[dict]) -> Table:
    """A rich table of the columns a reader scans first; the CSV has them all. A figure whose
    spread is too wide to trust (`deqbench.report.results.noisy_figures`) is marked ``!``,
    a timing of a smoke run ``†`` (`SMOKE_NOTE`)."""
    gradients = any(_cell(r.get("gradient")) not in ("–", "") for r in rows)
    varying = {k: v for k, v in _SETTINGS.items() if len({_cell(r.get(k)) for r in rows}) > 1}
    columns = {
        "problem": "problem",
        "solver": "solver",
        **({"gradient": "gradient"} if gradients else {}),
        **varying,
        "status": "status",
        **(_GRADIENT if gradients else _SOLVE),
    }
    shown = {k: v for k, v in columns.items() if any(_cell(r.get(k)) != "–" for r in rows)}
    smoke = [_cell(row.get("smoke")) != EMPTY for row in rows]
    table = Table(caption=SMOKE_NOTE if any(smoke) else None)
    add_columns(table, shown.values(), text=_text(shown))
    colour = {RunStatus.CONVERGED: None, RunStatus.MAX_ITER: "yellow"}
    for row, smoked in zip(rows, smoke, strict=True):
        noisy = _noisy(row)
        marked = set(_TIMED) if smoked else set()
        cells = (
            _cell(row.get(k))
            + ("!" if k in noisy else "")
            + (SMOKE_MARK if k in marked and _cell(row.get(k)) != EMPTY else "")
            for k in shown
        )
        table.add_row(*cells, style=colour.get(row["status"], "red"))
    return table
