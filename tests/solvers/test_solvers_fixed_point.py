"""Fixed-point iteration."""

from __future__ import annotations

import pytest
import torch

from deqbench.solvers import FixedPoint, Status
from deqbench.solvers.base import check_call

DT = torch.float64


def affine(rho: float, batch: int = 3, dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=gen, dtype=DT)
    a *= rho / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(batch, dim, generator=gen, dtype=DT)
    answer = torch.linalg.solve(torch.eye(dim, dtype=DT) - a, b.T).T
    return (lambda z: z @ a.T + b), b, answer


def test_converges_to_the_fixed_point():
    f, b, answer = affine(0.5)
    result = FixedPoint()(f, torch.zeros_like(b), max_iter=100, tol=1e-12)
    assert result.status is Status.CONVERGED
    torch.testing.assert_close(result.z, answer, rtol=1e-10, atol=1e-10)
    assert result.abs_trace.shape == (result.nfe, 3)


def test_damping_slows_a_contraction_but_still_converges():
    f, b, answer = affine(0.5)
    plain = FixedPoint()(f, torch.zeros_like(b), max_iter=200, tol=1e-10)
    damped = FixedPoint(beta=0.5)(f, torch.zeros_like(b), max_iter=200, tol=1e-10)
    assert damped.status is Status.CONVERGED
    assert damped.nfe > plain.nfe
    torch.testing.assert_close(damped.z, answer, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("beta", [0.0, 1.5, -1.0])
def test_rejects_bad_damping(beta):
    with pytest.raises(ValueError, match="beta"):
        FixedPoint(beta=beta)


def test_rejects_bad_call_arguments():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="flat"):
        check_call(z[None], 5, 1e-3, "rel")
    for kwargs, word in (({"max_iter": 0}, "max_iter"), ({"tol": 0.0}, "tol")):
        with pytest.raises(ValueError, match=word):
            FixedPoint()(lambda z: z, z, **kwargs)
    with pytest.raises(ValueError, match="stop_mode"):
        FixedPoint()(lambda z: z, z, stop_mode="max")


def test_a_stopped_sample_keeps_its_residual_and_its_answer():
    # Sample 0 contracts fast, sample 1 slowly: sample 0 stops first, its row of the trace
    # repeats its last residual from then on, and its answer is its iterate at that step (it
    # may move on with the batch; the monitor ignores it).
    scale = torch.tensor([[0.1], [0.9]], dtype=DT)
    calls = []

    def f(z):
        calls.append(z.clone())
        return scale * z + 1

    result = FixedPoint()(f, torch.zeros(2, 4, dtype=DT), max_iter=300, tol=1e-10)
    easy, hard = result.nstep.tolist()
    assert easy < hard == result.nfe - 1
    assert result.best_step.tolist()[0] == easy
    assert torch.equal(result.z[0], calls[easy][0])
    assert bool((result.abs_trace[easy:, 0] == result.abs_trace[easy, 0]).all())


def test_divergence_is_reported_not_raised():
    result = FixedPoint()(lambda z: 3 * z + 1, torch.zeros(2, 3, dtype=DT), max_iter=50)
    assert result.status is Status.DIVERGED
    assert bool(torch.isfinite(result.z).all())
    assert "diverged" in result.message


def test_non_finite_first_residual_is_divergence():
    result = FixedPoint()(lambda z: z + float("inf"), torch.zeros(2, 3, dtype=DT), max_iter=5)
    assert result.sample_status.tolist() == [2, 2]
    assert result.nfe == 1


def test_max_iter_status_when_tol_is_out_of_reach():
    f, b, _ = affine(0.99)
    result = FixedPoint()(f, torch.zeros_like(b), max_iter=7, tol=1e-14)
    assert result.nfe == 7
    assert result.status is Status.MAX_ITER
    assert result.nstep.tolist() == [6, 6, 6]


def test_a_zero_start_is_never_the_answer_once_a_step_exists():
    # The iteration gets worse after its first step, so the lowest residual is the start's.
    def f(z):
        return z * 0 + 1 if bool((z == 0).all()) else 10 * z

    result = FixedPoint(divergence=1e9)(f, torch.zeros(1, 3, dtype=DT), max_iter=3)
    assert result.best_step.tolist() == [1]
    assert bool((result.z != 0).all())
