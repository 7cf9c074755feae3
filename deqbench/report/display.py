"""The live displays of a suite. A training suite's shows the suite's progress, the current
run's bar (step, loss, forward NFE, residual, images/s, ETA) and a table of the runs finished
so far; it is fed only at the run's log drains (`deqbench.runs.train.steplog.StepLog.drain`),
so it adds no per-step work. Without a terminal (CI, a pipe, a Slurm log) it prints plain
lines instead (`deqbench.report.progress`): the run's steps at its ``progress_every`` cadence,
each interim evaluation and each finished run. Other kinds show a progress bar
(`ProgressDisplay`), or without a terminal a line per finished run.
"""

from __future__ import annotations

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

from deqbench.report.cells import EMPTY, add_columns, fmt
from deqbench.report.progress import StepLines
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


#: Columns of names, not figures: they may fold onto more lines.
TEXT_COLUMNS = ("model", "problem", "solver", "gradient", "status")


def finished_table(rows: list[dict[str, Any]]) -> Table:
    """The finished runs, with the columns that any row fills."""
    shown = {k: t for k, t in FINISHED.items() if any(fmt(r.get(k)) != EMPTY for r in rows)}
    table = Table()
    add_columns(table, shown.values(), text=[shown[k] for k in TEXT_COLUMNS if k in shown])
    colours = {RunStatus.COMPLETED: None, RunStatus.DIVERGED: "yellow"}
    for row in rows:
        table.add_row(*(fmt(row.get(k)) for k in shown), style=colours.get(row["status"], "red"))
    return table


#: The figures of `plain_line`: row key → label (those the row fills).
_PLAIN = (
    ("solver", "solver"),
    ("gradient", "grad"),
    ("eval_top1", "top1"),
    ("eval_miou", "miou"),
    ("f_nfe_mean", "fNFE"),
    ("nfe", "NFE"),
    ("rel_residual_max", "rel_res"),
    ("solve_ms_median", "solve_ms"),
    ("backward_ms_median", "bwd_ms"),
    ("step_ms_median", "step_ms"),
    ("train_s", "train_s"),
)


def plain_line(row: dict[str, Any], total: int, done: int | None = None) -> str:
    """One line per finished run, for logs: the ``done``-th of ``total`` to run here (a share
    or a resumed suite runs fewer than the suite has), and the run's index when that differs."""
    done = row["run"] + 1 if done is None else done
    where = f"run {done}/{total}" + (f" (#{row['run']})" if done != row["run"] + 1 else "")
    parts = [where, row.get("model") or row.get("problem", ""), row["status"]]
    for key, label in _PLAIN:
        if fmt(row.get(key)) != EMPTY:
            parts.append(f"{label}={fmt(row.get(key))}")
    if fmt(row.get("smoke")) != EMPTY:
        parts.append("(smoke: timed from one unwarmed repeat)")
    if row.get("error"):
        parts.append(f"error={row['error']}")
    return " ".join(str(p) for p in parts if p != "")


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
        self.lines = StepLines(console)  # without a terminal

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
            if exc_type is None:  # the summary prints the finished runs' table next: not twice
                self._live.update(Group(self.suite), refresh=True)
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
        self.lines.start(f"run {len(self.rows) + 1}/{self.total} {run.label}", total_steps)

    def progress(self, snapshot: dict[str, Any]) -> None:
        if self.run_task is None:
            return
        if not self.live_mode:
            if "eval" in snapshot:
                self.lines.evaluation(snapshot)
            else:
                self.lines.step(snapshot)
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
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class ProgressDisplay:
    """A suite's progress bar, gone when the suite ends (solve suites: runs are short); without
    a terminal, a plain line per finished run instead. Context manager; its `run_finished` is
    the runner's ``on_row``."""

    def __init__(self, console: Console, suite_name: str, total_runs: int) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self.bar = Progress(*columns, TimeElapsedColumn(), console=console, transient=True)
        self.task = self.bar.add_task(suite_name, total=total_runs)
        self.console, self.total, self.done = console, total_runs, 0
        self.live_mode = console.is_terminal

    def __enter__(self) -> ProgressDisplay:
        if self.live_mode:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live_mode:
            self.bar.__exit__(*exc)

    def run_finished(self, row: dict[str, Any]) -> None:
        """The runner's ``on_row``."""
        self.done += 1
        self.bar.advance(self.task)
        if not self.live_mode:
            line = plain_line(row, self.total, self.done)
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
