"""The experiment loggers of one training run (`deqbench.loggers`): built from the registry as
the suite's ``[logging]`` table selects them, started, and ended with the run's row."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deqbench.execution.distributed import Dist
from deqbench.loggers import LoggedRun, LoggerGroup
from deqbench.plugins import get_registry
from deqbench.suite.train import TrainRun


def run_config(run: TrainRun) -> dict[str, Any]:
    """What the loggers record as the run's config: its suite tables as they apply to it
    (``[logging]`` left out), and what defines it among the suite's runs."""
    tables = run.spec.model_dump(mode="json", exclude={"matrix", "include", "logging"})
    defining = {"index": run.index, "seed": run.seed, "max_steps": run.max_steps}
    return {**tables, "run": {**defining, "options": dict(run.options)}}


def open_loggers(run: TrainRun, report: str | Path | None, dist: Dist) -> LoggerGroup | None:
    """The started loggers ``run`` selects: on the main rank only, and only with a report (a
    logger writing files puts them beside it); None when there are none. The suite was
    validated, so every name is registered and its options fit."""
    names = run.spec.logging.selected()
    if not names or report is None or not dist.is_main:
        return None
    registry = get_registry()
    options = run.spec.logging.options
    group = LoggerGroup([registry.get("loggers", n).obj(**options.get(n, {})) for n in names])
    logged = LoggedRun(run.spec.suite.name, run.index, run.label, Path(report), run_config(run))
    try:
        group.start(logged)
    except BaseException as exc:  # the loggers that did start are closed
        group.close(exc)
        raise
    return group


@contextlib.contextmanager
def closed_on_error(group: LoggerGroup | None) -> Iterator[None]:
    """Close ``group`` with the exception that leaves the block, then let it go on."""
    try:
        yield
    except BaseException as exc:
        if group is not None:
            group.close(exc)
        raise


def end_loggers(group: LoggerGroup | None, row: Mapping[str, Any]) -> None:
    """Give the loggers the run's final ``row``, then close them."""
    if group is None:
        return
    try:
        group.finish(row)
    except BaseException as exc:
        group.close(exc)
        raise
    group.close()
