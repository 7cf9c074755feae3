"""Conformance kits for cells, solvers and gradient estimators; tiny dataset fixtures."""

from deqbench.testing.cells import check_cell
from deqbench.testing.datasets import (
    corrupt_file,
    label_colour,
    make_cifar10,
    make_cityscapes,
    make_imagenet_folder,
)
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
    "corrupt_file",
    "label_colour",
    "make_cifar10",
    "make_cityscapes",
    "make_imagenet_folder",
    "run_solver_check",
    "skipped_checks",
    "solver_conformance_params",
]
