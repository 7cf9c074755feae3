"""deqbench: a plugin-based solver and benchmark suite for deep equilibrium models.

The public names below are imported on first access (PEP 562), so ``import deqbench`` and
``deqbench.hookimpl`` (what a plugin's entry module needs) cost no torch import; ``deqbench.DEQ``
and the other torch-backed names import their module when first used.

To add a public name: add ``"Name": "deqbench.module"`` to ``_LAZY`` (the module that defines
it) and ``"Name"`` to ``__all__``; add it under ``TYPE_CHECKING`` too so type checkers see it.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = _metadata.version("deqbench")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

#: public name -> the module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "Cell": "deqbench.cell",
    "DEQ": "deqbench.deq",
    "CellContractError": "deqbench.deq",
    "DEQSettings": "deqbench.models",
    "Model": "deqbench.models",
    "spectral_radius": "deqbench.measure.diagnostics",
    "path_independence": "deqbench.measure.path_independence",
    "ConfigError": "deqbench.errors",
    "DeqbenchError": "deqbench.errors",
    "PluginConflictError": "deqbench.errors",
    "UnknownNameError": "deqbench.errors",
    "GradContext": "deqbench.gradients",
    "GradientEstimator": "deqbench.gradients",
    "ReentrantBackwardError": "deqbench.gradients",
    "hookimpl": "deqbench.hookspecs",
    "LoggedRun": "deqbench.loggers",
    "RunLogger": "deqbench.loggers",
    "SavedTensorsMeter": "deqbench.measure.memory",
    "get_cell": "deqbench.plugins",
    "get_gradient": "deqbench.plugins",
    "get_registry": "deqbench.plugins",
    "get_solver": "deqbench.plugins",
    "Fn": "deqbench.solvers.base",
    "InverseJacobian": "deqbench.solvers",
    "LowRankInverse": "deqbench.solvers",
    "Monitor": "deqbench.solvers",
    "MonitorMisuse": "deqbench.solvers",
    "Solver": "deqbench.solvers",
    "SolverResult": "deqbench.solvers",
    "Status": "deqbench.solvers",
    "StateSpec": "deqbench.state",
    "pack": "deqbench.state",
    "unpack": "deqbench.state",
    "DEQStats": "deqbench.stats",
    "SolveStats": "deqbench.stats",
    "load_checkpoint": "deqbench.execution.checkpoint",
    "save_checkpoint": "deqbench.execution.checkpoint",
    "Dist": "deqbench.execution.distributed",
    "WorkerOutcome": "deqbench.execution.worker",
    "RunStatus": "deqbench.report.schema",
    "Job": "deqbench.runs.kind",
    "RunKind": "deqbench.runs.kind",
    "RunOutput": "deqbench.runs.kind",
    "run_isolated": "deqbench.execution.worker",
}

if TYPE_CHECKING:
    from deqbench.cell import Cell
    from deqbench.deq import DEQ, CellContractError
    from deqbench.errors import ConfigError, DeqbenchError, PluginConflictError, UnknownNameError
    from deqbench.execution.checkpoint import load_checkpoint, save_checkpoint
    from deqbench.execution.distributed import Dist
    from deqbench.execution.worker import WorkerOutcome, run_isolated
    from deqbench.gradients import GradContext, GradientEstimator, ReentrantBackwardError
    from deqbench.hookspecs import hookimpl
    from deqbench.loggers import LoggedRun, RunLogger
    from deqbench.measure.diagnostics import spectral_radius
    from deqbench.measure.memory import SavedTensorsMeter
    from deqbench.measure.path_independence import path_independence
    from deqbench.models import DEQSettings, Model
    from deqbench.plugins import get_cell, get_gradient, get_registry, get_solver
    from deqbench.report.schema import RunStatus
    from deqbench.runs.kind import Job, RunKind, RunOutput
    from deqbench.solvers import (
        InverseJacobian,
        LowRankInverse,
        Monitor,
        MonitorMisuse,
        Solver,
        SolverResult,
        Status,
    )
    from deqbench.solvers.base import Fn
    from deqbench.state import StateSpec, pack, unpack
    from deqbench.stats import DEQStats, SolveStats


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif importlib.util.find_spec(f"deqbench.{name}") is not None:
        # A submodule (``deqbench.solvers``): the eager imports this file once made bound them.
        value = importlib.import_module(f"deqbench.{name}")
    else:
        raise AttributeError(f"module 'deqbench' has no attribute {name!r}")
    globals()[name] = value  # later accesses skip this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DEQ",
    "Cell",
    "CellContractError",
    "ConfigError",
    "DEQSettings",
    "DEQStats",
    "DeqbenchError",
    "Dist",
    "Fn",
    "GradContext",
    "GradientEstimator",
    "InverseJacobian",
    "Job",
    "LoggedRun",
    "LowRankInverse",
    "Model",
    "Monitor",
    "MonitorMisuse",
    "PluginConflictError",
    "ReentrantBackwardError",
    "RunKind",
    "RunLogger",
    "RunOutput",
    "RunStatus",
    "SavedTensorsMeter",
    "SolveStats",
    "Solver",
    "SolverResult",
    "StateSpec",
    "Status",
    "UnknownNameError",
    "WorkerOutcome",
    "__version__",
    "get_cell",
    "get_gradient",
    "get_registry",
    "get_solver",
    "hookimpl",
    "load_checkpoint",
    "pack",
    "path_independence",
    "run_isolated",
    "save_checkpoint",
    "spectral_radius",
    "unpack",
]
