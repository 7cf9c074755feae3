"""Root solvers: the interface and the built-ins (registered in `deqbench.builtins`)."""

from deqbench.solvers.base import Monitor, Solver, SolverResult, Status
from deqbench.solvers.fixed_point import FixedPoint

#: (name, factory, description) of the solvers the core registers through its own hooks.
BUILTIN = (("fixed-point", FixedPoint, "naive fixed-point iteration, optional damping"),)

__all__ = ["BUILTIN", "FixedPoint", "Monitor", "Solver", "SolverResult", "Status"]
