"""deqbench: a plugin-based solver and benchmark suite for deep equilibrium models."""

from deqbench.cell import Cell
from deqbench.errors import ConfigError, DeqbenchError, PluginConflictError, UnknownNameError
from deqbench.hookspecs import hookimpl
from deqbench.plugins import get_cell, get_gradient, get_registry, get_solver
from deqbench.solvers import Solver, SolverResult, Status
from deqbench.state import StateSpec, pack, unpack

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "ConfigError",
    "DeqbenchError",
    "PluginConflictError",
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
    "unpack",
]
