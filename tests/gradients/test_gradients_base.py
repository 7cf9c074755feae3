"""`GradContext.solve_backward`: the layer's backward settings, the recorded statistics, and
the refusal of a re-entered solve."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from deqbench import ReentrantBackwardError, Status
from deqbench.gradients import GradContext
from deqbench.solvers import FixedPoint

V = torch.tensor([[1.0, -2.0], [0.5, 4.0]], dtype=torch.float64)


def halving(g: torch.Tensor) -> torch.Tensor:
    """``g ↦ g/2 + V``: its fixed point is ``2V``, and fixed-point iteration from zero stands at
    ``(2 − 2^(1−k))V`` after k evaluations."""
    return g / 2 + V


@dataclass(kw_only=True)
class Counting(FixedPoint):
    calls: int = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


def test_the_layers_backward_settings_and_the_record():
    ctx = GradContext(z0=torch.zeros(2, 2), b_max_iter=3, b_tol=1e-12)
    result = ctx.solve_backward(halving, torch.zeros_like(V))
    assert result.nfe == 3 and result.status is Status.MAX_ITER
    # three evaluations observed at 0, V, 1.5V: the best iterate is the last point, 1.5V
    assert torch.allclose(result.z, 1.5 * V)
    assert ctx.stats.backward is not None and ctx.stats.backward.result is result


def test_arguments_override_the_layer_and_b_solver_is_used():
    b_solver, own = Counting(), Counting()
    ctx = GradContext(z0=torch.zeros(2, 2), b_max_iter=3, b_solver=b_solver)
    result = ctx.solve_backward(halving, torch.zeros_like(V), max_iter=200, tol=1e-12)
    assert result.status is Status.CONVERGED and torch.allclose(result.z, 2 * V, atol=1e-11)
    assert b_solver.calls == 1
    ctx.solve_backward(halving, torch.zeros_like(V), solver=own, stop_mode="abs")
    assert (b_solver.calls, own.calls) == (1, 1)
    assert ctx.stats.backward.result.stop_mode == "abs"


def test_a_re_entered_solve_is_refused_and_the_next_one_runs():
    ctx = GradContext(z0=torch.zeros(2, 2))

    def re_entering(g: torch.Tensor) -> torch.Tensor:
        ctx.solve_backward(halving, torch.zeros_like(V))  # what a hook on its own VJP does
        return halving(g)

    with pytest.raises(ReentrantBackwardError, match="re-entered itself"):
        ctx.solve_backward(re_entering, torch.zeros_like(V))
    assert ctx.stats.backward is None
    assert ctx.solve_backward(halving, torch.zeros_like(V)).nfe >= 1
