"""The plugin passes deqbench's solver conformance kit, check by check."""

import pytest

from deqbench.testing import run_solver_check, solver_conformance_params


@pytest.mark.parametrize(("solver", "check"), solver_conformance_params("momentum"))
def test_momentum_conforms(solver, check):
    run_solver_check(solver, check)
