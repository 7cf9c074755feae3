"""deqbench: a plugin-based solver and benchmark suite for deep equilibrium models."""

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

__version__ = "0.1.0"

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
