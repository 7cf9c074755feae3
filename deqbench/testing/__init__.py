"""Conformance kits: run them on a plugin's cells, solvers and gradient estimators."""

from deqbench.testing.cells import check_cell
from deqbench.testing.gradients import GradientCheck, check_gradient
from deqbench.testing.solvers import (
    check_solver,
    run_solver_check,
    skipped_checks,
    solver_conformance_params,
)
from deqbench.testing.toys import ToyCell

__all__ = [
    "GradientCheck",
    "ToyCell",
    "check_cell",
    "check_gradient",
    "check_solver",
    "run_solver_check",
    "skipped_checks",
    "solver_conformance_params",
]
