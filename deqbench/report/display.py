"""The live displays of a suite. A training suite's shows the suite's progress, the current
run's bar (step, loss, forward NFE, residual, images/s, ETA) and a table of the runs finished
so far; it is fed only at the run's log drains (`deqbench.runs.train.steplog.StepLog.drain`),
so it adds no per-step work, and without a terminal (CI, a pipe) it prints one plain line per
finished run. Other kinds show a progress bar (`ProgressDisplay`).
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from deqbench.report.schema import RunStatus

#: Columns of the finished-runs table: row key → title.
FINISHED = {
    "run": "#",
    "model": "model",
    "solver": "solver",
    "gradient": "gradient",
    "status": "status",
    "eval_top1": "top-1 %",
    "eval_miou": "mIoU %",
    "f_nfe_mean": "f NFE",
    "b_nfe_mean": "b NFE",
    "step_ms_median": "step ms",
    "saved_mb": "saved MB",
    "train_s": "train s",
}


def fmt(value: Any) -> str:
    """A report value for a table cell: '–' for empty, 3 significant digits for floats."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def finished_table(rows: list[dict[str, Any]]) -> Table:
    """The finished runs, with the columns that any row fills."""
    shown = {k: t for k, t in FINISHED.items() if any(fmt(r.get(k)) != "–" for r in rows)}
    table = Table()
    for title in shown.values():
        table.add_column(title, overflow="fold")
    colours = {RunStatus.COMPLETED: None, RunStatus.DIVERGED: "yellow"}
    for row in rows:
        table.add_row(*(fmt(row.get(k)) for k in shown), style=colours.get(row["status"], "red"))
    return table


def plain_line(row: dict[str, Any], total: int, done: int | None = None) -> str:
    """One line per finished run, for logs: the ``done``-th of ``total`` to run here (a share
    or a resumed suite runs fewer than the suite has), and the run's index when that differs."""
    done = row["run"] + 1 if done is None else done
    where = f"run {done}/{total}" + (f" (#{row['run']})" if done != row["run"] + 1 else "")
    parts = [where, row.get("model", ""), row["status"]]
    for key, label in (
        ("solver", "solver"),
        ("gradient", "grad"),
        ("eval_top1", "top1"),
        ("eval_miou", "miou"),
        ("f_nfe_mean", "fNFE"),
        ("step_ms_median", "step_ms"),
        ("train_s", "train_s"),
    ):
        if fmt(row.get(key)) != "–":
            parts.append(f"{label}={fmt(row.get(key))}")
    if row.get("error"):
        parts.append(f"error={row['error']}")
    return " ".join(str(p) for p in parts)


class TrainDisplay:
    """Context manager; pass it as the runner's ``observer`` and its `run_finished` as
    ``on_row``."""

    def __init__(self, console: Console, suite_name: str, total_runs: int) -> None:
        self.console = console
        self.total = total_runs
        self.rows: list[dict[str, Any]] = []
        self.live_mode = console.is_terminal
        self.suite = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.suite_task = self.suite.add_task(suite_name, total=total_runs)
        self.run = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.run_task: Any = None
        self._eval = ""  # the last interim evaluation of the current run
        self._live: Live | None = None

    def __enter__(self) -> TrainDisplay:
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def _render(self) -> Group:
        parts: list[Any] = [self.suite, self.run]
        if self.rows:
            parts.append(finished_table(self.rows))
        return Group(*parts)

    # -- observer --------------------------------------------------------------------------------
    def run_started(self, run: Any, total_steps: int) -> None:
        if self.run_task is not None:
            self.run.remove_task(self.run_task)
        self.run_task = self.run.add_task(run.label, total=total_steps, info="")
        self._eval = ""

    def progress(self, snapshot: dict[str, Any]) -> None:
        if self.run_task is None:
            return
        if "eval" in snapshot:  # an interim evaluation at an epoch's end
            result = snapshot["eval"]
            score = result.get("eval_top1", result.get("eval_miou"))
            self._eval = f"eval@{snapshot['epoch']} {fmt(score)} %"
            return
        info = [f"loss {fmt(snapshot['loss'])}"]
        if snapshot.get("f_nfe") is not None:
            info.append(f"NFE {snapshot['f_nfe']}")
            info.append(f"res {fmt(snapshot['f_rel_residual'])}")
        if snapshot.get("images_per_s"):
            info.append(f"{snapshot['images_per_s']:.0f} img/s")
        if self._eval:
            info.append(self._eval)
        self.run.update(self.run_task, completed=snapshot["step"] + 1, info=" ".join(info))

    def run_finished(self, row: dict[str, Any]) -> None:
        """The runner's ``on_row``."""
        self.rows.append(row)
        self.suite.advance(self.suite_task)
        if self._live is not None:
            self._live.update(self._render())
        else:
            line = plain_line(row, self.total, len(self.rows))
            self.console.print(line, highlight=False, soft_wrap=True)


class ProgressDisplay:
    """A suite's progress bar, gone when the suite ends (solve suites: runs are short).
    Context manager; its `run_finished` is the runner's ``on_row``."""

    def __init__(self, console: Console, suite_name: str, total_runs: int) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self.bar = Progress(*columns, TimeElapsedColumn(), console=console, transient=True)
        self.task = self.bar.add_task(suite_name, total=total_runs)

    def __enter__(self) -> ProgressDisplay:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def run_finished(self, row: dict[str, Any]) -> None:
        """The runner's ``on_row``."""
        self.bar.advance(self.task)
