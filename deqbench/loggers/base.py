"""What a training run tells an experiment logger (TensorBoard, W&B, MLflow, a plugin's own).

A suite selects loggers by their registered names (``[logging] loggers = ["tensorboard"]``) and
gives each its options (``[logging.options.wandb] project = "deq"``); the registered factory is
called with those options and returns a `RunLogger`. On the main rank only, a training run then
calls, in order:

- `RunLogger.start` once, with the run's `LoggedRun` (its name, config and report path);
- `RunLogger.log_step` for each step row (in step order) and `RunLogger.log_eval` after each
  evaluation (interim and final), both ending in `RunLogger.log_scalars`;
- `RunLogger.finish` with the run's final row, whatever its status (completed, diverged,
  timeout);
- `RunLogger.close` last, always: ``error`` is the exception when the run raised instead.
"""

from __future__ import annotations

import importlib.util
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: Step-row column → the scalar's tag, the same for every logger.
STEP_SCALARS = {
    "loss": "train/loss",
    "f_nfe": "train/f_nfe",
    "b_nfe": "train/b_nfe",
    "f_rel_residual": "train/f_rel_residual",
    "images_per_s": "train/images_per_s",
    "lr": "train/lr",
}


def finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are finite numbers, as floats (empty, text and NaN left
    out: a NaN loss ends the run as diverged, and the report says so)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def step_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """A step row's scalars under their tags (`STEP_SCALARS`), the empty ones left out."""
    return finite({tag: row.get(column) for column, tag in STEP_SCALARS.items()})


def eval_scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """Eval columns under their tags: ``eval_top1`` → ``eval/top1``."""
    return finite({"eval/" + k.removeprefix("eval_"): v for k, v in result.items()})


@dataclass(frozen=True)
class LoggedRun:
    """One run as its loggers see it."""

    suite: str  #: the suite's ``[suite] name``
    index: int  #: the run's number in the suite (its report row's ``run``)
    label: str  #: what tells it from the suite's other runs, e.g. ``tiny-deq gradient=ift``
    report: Path  #: the report CSV; a logger writing files puts them beside it
    config: dict[str, Any] = field(default_factory=dict)  #: the run's suite tables, nested

    @property
    def name(self) -> str:
        """A name that is safe as a folder: ``run-007`` or ``run-007-<label>``."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-")
        return f"run-{self.index:03d}" + (f"-{slug}" if slug else "")

    def flat_config(self) -> dict[str, Any]:
        """`config` with dotted keys (``deq.solver``), as ``--set`` names them."""

        def walk(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in node.items():
                if isinstance(value, Mapping) and value:
                    out.update(walk(value, f"{prefix}{key}."))
                else:
                    out[f"{prefix}{key}"] = value
            return out

        return walk(self.config, "")


class RunLogger(ABC):
    """One run's log in an experiment logger. Registered factories take the logger's options
    as keywords (validated against their signature) and must not contact anything until
    `start`. Subclasses implement `start`, `log_scalars` and `close`."""

    #: the import names of the packages it needs, checked at validation (`missing`)
    requires: ClassVar[tuple[str, ...]] = ()
    #: what installs them, e.g. ``pip install 'deqbench[wandb]'``
    install: ClassVar[str] = ""

    @classmethod
    def missing(cls) -> str | None:
        """Why this logger cannot run here (a package not installed, naming what installs it),
        or None. Asked when a suite is validated, before any run starts."""
        absent = [name for name in cls.requires if not _importable(name)]
        if not absent:
            return None
        how = f"install it: {cls.install}" if cls.install else "install it"
        return f"needs the {', '.join(absent)} package, which is not installed; {how}"

    @abstractmethod
    def start(self, run: LoggedRun) -> None:
        """The run begins (or resumes): open its log."""

    @abstractmethod
    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record finite ``tag → value`` scalars at training step ``step``."""

    def log_step(self, row: Mapping[str, Any]) -> None:
        """A step row (``<report>.steps.csv``'s columns), at its ``step``."""
        self.log_scalars(int(row["step"]), step_scalars(row))

    def log_eval(self, step: int, result: Mapping[str, Any]) -> None:
        """An evaluation's eval columns, after ``step`` training steps."""
        self.log_scalars(step, eval_scalars(result))

    def finish(self, row: Mapping[str, Any]) -> None:  # noqa: B027 (optional; nothing by default)
        """The run ended with its report ``row`` (identity, status and figures)."""

    @abstractmethod
    def close(self, error: BaseException | None = None) -> None:
        """Flush and release the log; ``error``: the run raised it. Closing twice is
        harmless."""


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or half-imported installation
        return False


class LoggerGroup(RunLogger):
    """The loggers a run selected, called in turn."""

    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = list(loggers)

    def start(self, run: LoggedRun) -> None:
        for logger in self.loggers:
            logger.start(run)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for logger in self.loggers:
            logger.log_scalars(step, scalars)

    def log_step(self, row: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_step(row)

    def log_eval(self, step: int, result: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_eval(step, result)

    def finish(self, row: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.finish(row)

    def close(self, error: BaseException | None = None) -> None:
        """Close every logger, even when one fails to (the first failure is raised after)."""
        failure: BaseException | None = None
        for logger in self.loggers:
            try:
                logger.close(error)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
