"""deqbench: a plugin-based solver and benchmark suite for deep equilibrium models."""

from importlib import metadata as _metadata

from deqbench.cell import Cell
from deqbench.deq import DEQ
from deqbench.diagnostics import spectral_radius
from deqbench.errors import ConfigError, DeqbenchError, PluginConflictError, UnknownNameError
from deqbench.gradients import GradContext, GradientEstimator
from deqbench.hookspecs import hookimpl
from deqbench.memory import SavedTensorsMeter
from deqbench.plugins import get_cell, get_gradient, get_registry, get_solver
from deqbench.solvers import Monitor, Solver, SolverResult, Status
from deqbench.state import StateSpec, pack, unpack
from deqbench.stats import DEQStats, SolveStats

try:
    __version__ = _metadata.version("deqbench")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEQ",
    "Cell",
    "ConfigError",
    "DEQStats",
    "DeqbenchError",
    "GradContext",
    "GradientEstimator",
    "Monitor",
    "PluginConflictError",
    "SavedTensorsMeter",
    "SolveStats",
    "Solver",
    "SolverResult",
    "StateSpec",
    "Status",
    "UnknownNameError",
    "__version__",
    "get_cell",
    "get_gradient",
    "get_registry",
    "get_solver",
    "hookimpl",
    "pack",
    "spectral_radius",
    "unpack",
]
