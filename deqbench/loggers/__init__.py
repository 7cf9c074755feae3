"""Experiment loggers: the interface a training run calls (`deqbench.loggers.base`).

Loggers are registered through the ``register_loggers`` hook; a suite selects them with
``[logging] loggers``. docs/loggers.md shows how to write one.
"""

from deqbench.loggers.base import (
    STEP_SCALARS,
    LoggedRun,
    LoggerGroup,
    RunLogger,
    eval_scalars,
    finite,
    step_scalars,
)

__all__ = [
    "STEP_SCALARS",
    "LoggedRun",
    "LoggerGroup",
    "RunLogger",
    "eval_scalars",
    "finite",
    "step_scalars",
]
