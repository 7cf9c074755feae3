"""Limited-memory Broyden: fixed memory, a plain first step, and a safe backward solver."""

from __future__ import annotations

import pytest
import torch

from deqbench.measure.timing import LiveTensorMeter
from deqbench.plugins import get_solver
from deqbench.solvers import Broyden, FixedPoint, Status
from deqbench.testing.solvers import cell_problem

TORCHDEQ_BROYDEN = "torchdeq-broyden"


def affine(rho: float, batch: int = 4, dim: int = 32, scale: float = 1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    a *= rho / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * scale
    answer = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    a, b, answer = a.to(dtype), b.to(dtype), answer.to(dtype)
    return (lambda z: z @ a.T + b), b, answer


def solver_bytes(solver, f, z0, max_iter: int) -> int:
    """Peak bytes the solver itself holds (what ``f`` allocates is not counted)."""
    meter = LiveTensorMeter()
    with meter:
        solver(meter.exclude(f), z0, max_iter=max_iter, tol=1e-30)
    return meter.peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converges_on_contractions(dtype):
    f, b, answer = affine(0.9, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    result = Broyden()(f, torch.zeros_like(b), max_iter=200, tol=tol)
    assert result.status is Status.CONVERGED, result.message
    assert result.z.dtype == dtype
    assert float((result.z - answer).norm() / answer.norm()) < 1e3 * tol


def test_memory_does_not_grow_with_max_iter():
    f, b, _ = affine(0.999, batch=4, dim=128)
    z0 = torch.zeros_like(b)
    short, long = (solver_bytes(Broyden(m=8), f, z0, n) for n in (12, 60))
    state = b.numel() * b.element_size()
    traces = 2 * b.shape[0] * b.element_size()  # the monitor's abs and rel rows, per step
    # Once samples' best iterates come from different steps, the monitor keeps a copy of them
    # (one state, plus the rows it copies in): paid once, whatever the cap.
    assert long - short <= (60 - 12) * traces + 2 * state
    assert short < (2 * 8 + 24) * state  # the (B, 2m, D) pairs and a bounded set of vectors


def test_the_memory_check_catches_a_growing_solver():
    # TorchDEQ's Broyden keeps one pair per iteration: the same measurement must see it grow.
    pytest.importorskip("torchdeq")
    f, b, _ = affine(0.999, batch=4, dim=128)
    z0 = torch.zeros_like(b)
    short, long = (solver_bytes(get_solver(TORCHDEQ_BROYDEN), f, z0, n) for n in (12, 60))
    assert long - short > 40 * b.numel() * b.element_size()


def test_first_step_is_a_fixed_point_step():
    f, b, _ = affine(0.9)
    inputs = []

    def recorded(z):
        inputs.append(z.clone())
        return f(z)

    Broyden()(recorded, torch.zeros_like(b), max_iter=5, tol=1e-30)
    torch.testing.assert_close(inputs[1], f(torch.zeros_like(b)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_like_solve_with_tiny_vectors_is_not_the_zero_start(dtype):
    # The implicit backward solves g = Jᵀg + v from zero, with v of gradient size.
    f, v, answer = affine(0.9, scale=1e-6, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    result = Broyden()(f, torch.zeros_like(v), max_iter=200, tol=tol)
    assert result.status is Status.CONVERGED, result.message
    assert bool((result.best_step > 0).all())
    assert float((result.z - answer).norm() / answer.norm()) < 1e3 * tol


def test_a_worse_first_step_is_still_returned_over_the_zero_start():
    f, v, _ = affine(1.5, scale=1e-6)  # expansive: the first step raises the residual
    result = Broyden()(f, torch.zeros_like(v), max_iter=2, tol=1e-30)
    assert result.best_step.tolist() == [1] * v.shape[0]
    assert bool((result.z.norm(dim=1) > 0).all())


@pytest.mark.parametrize("m", [1, 2])
def test_restarts_when_the_pairs_run_out(m):
    f, b, answer = affine(0.95)
    result = Broyden(m=m)(f, torch.zeros_like(b), max_iter=500, tol=1e-10)
    assert result.status is Status.CONVERGED, result.message
    torch.testing.assert_close(result.z, answer, rtol=1e-8, atol=1e-8)


def test_beats_fixed_point_on_a_hard_tanh_cell():
    f, z0 = cell_problem("tanh", batch=16, dim=128, spectrum="symmetric", spectral_norm=0.99)
    kwargs = {"max_iter": 500, "tol": 1e-4}
    broyden, fp = Broyden()(f, z0, **kwargs), FixedPoint()(f, z0, **kwargs)
    assert broyden.status is Status.CONVERGED, broyden.message
    assert broyden.nfe < fp.nfe


def test_line_search_counts_every_evaluation():
    f, z0 = cell_problem("tanh", batch=8, dim=64, spectrum="symmetric", injection_scale=0.1)
    calls = 0

    def counted(z):
        nonlocal calls
        calls += 1
        return f(z)

    result = Broyden(line_search=True)(counted, z0, max_iter=300, tol=1e-4)
    assert result.status is Status.CONVERGED, result.message
    assert calls == result.nfe == result.abs_trace.shape[0]


def test_line_search_backtracks_a_bad_step():
    # Far from the root of z ↦ 0.5·tanh(z) + 3 the full quasi-Newton steps overshoot; with the
    # line search the batch needs trial evaluations, and they are counted.
    f = lambda z: torch.tanh(z) * 0.5 + 3  # noqa: E731
    z0 = torch.full((2, 4), -20.0, dtype=torch.float64)
    plain = Broyden()(f, z0, max_iter=100, tol=1e-10)
    searched = Broyden(line_search=True)(f, z0, max_iter=100, tol=1e-10)
    assert searched.status is Status.CONVERGED, searched.message
    assert plain.status is Status.CONVERGED, plain.message


@pytest.mark.parametrize(("option", "value"), [("m", 0), ("ls_steps", 0)])
def test_rejects_bad_options(option, value):
    with pytest.raises(ValueError, match=option):
        Broyden(**{option: value})
