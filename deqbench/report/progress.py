"""Plain progress lines for output that is not a terminal (a pipe, a CI or Slurm log), where a
live display shows nothing until the suite ends.

A training run prints a line every ``progress_every`` steps and at its last step (step, loss,
forward NFE and relative residual, images/s, ETA), and one per interim evaluation; the display
adds one per finished run. The loop drains its step log at those steps
(`deqbench.runs.train.loop`), so the lines fall exactly on them, and tells the cadence in each
snapshot (``progress_every``; 0: no step lines).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from deqbench.report.cells import EMPTY, fmt

#: The cadence when a snapshot does not say (``[logging] progress_every``'s default).
DEFAULT_EVERY = 100


def duration(seconds: float | None) -> str:
    """``h:mm:ss`` for logs: ``3725 → "1:02:05"``; `EMPTY` when unknown."""
    if seconds is None:
        return EMPTY
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class StepLines:
    """Prints a training run's progress as plain lines (see the module)."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.clock = console, clock
        self.prefix = ""
        self.total = 0
        self._start: tuple[float, int] | None = None  #: (time, steps done) the pace counts from
        self._started = clock()

    def start(self, prefix: str, total_steps: int) -> None:
        """A run begins: ``prefix`` leads its lines ("run 2/9 mdeq-small solver=anderson")."""
        self.prefix, self.total = prefix, total_steps
        self._start = None
        self._started = self.clock()

    def step(self, snapshot: dict[str, Any]) -> None:
        """A drained step log's latest step; printed when it is due."""
        done = snapshot["step"] + 1
        total = snapshot.get("total") or self.total
        every = snapshot.get("progress_every", DEFAULT_EVERY)
        now = self.clock()
        if self._start is None:
            # A resumed run starts past step 0: its pace counts from its first snapshot. Until
            # a second one, count from the run's start (exact for a run from step 0).
            self._start = (now, done)
            pace = (now - self._started) / done if done else None
        else:
            since, first = self._start
            pace = (now - since) / (done - first) if done > first else None
        if not every or not (done == total or done % every == 0):
            return
        fields = [f"step {done:,}/{total:,}", f"loss {fmt(snapshot.get('loss'))}"]
        if snapshot.get("f_nfe") is not None:
            fields.append(f"NFE {snapshot['f_nfe']}")
            fields.append(f"res {fmt(snapshot.get('f_rel_residual'))}")
        if snapshot.get("images_per_s"):
            fields.append(f"{fmt(snapshot['images_per_s'])} img/s")
        left = None if pace is None else pace * (total - done)
        fields.append(f"ETA {duration(left)}")
        self._print(", ".join(fields))

    def evaluation(self, snapshot: dict[str, Any]) -> None:
        """An interim evaluation (at an epoch's end)."""
        result = snapshot["eval"]
        where = f"eval after epoch {snapshot['epoch']}"
        if snapshot.get("step") is not None:
            where += f" (step {snapshot['step']:,})"
        fields = []
        for key, label, unit in (
            ("eval_top1", "top-1", " %"),
            ("eval_miou", "mIoU", " %"),
            ("eval_loss", "loss", ""),
            ("eval_nfe_mean", "NFE", ""),
        ):
            if fmt(result.get(key)) != EMPTY:
                fields.append(f"{label} {fmt(result[key])}{unit}")
        self._print(f"{where}: {', '.join(fields)}")

    def _print(self, text: str) -> None:
        # not markup: a label or an error may hold "[...]"
        line = f"{self.prefix}: {text}" if self.prefix else text
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
