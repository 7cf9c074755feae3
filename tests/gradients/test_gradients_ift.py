"""The implicit gradient: exactness with every backward solver, GMRES, the backward cap,
non-convergence in the statistics, repeated backward, and the reference-gradient helpers."""

from __future__ import annotations

import pytest
import torch

from deqbench.deq import DEQ, bind
from deqbench.gradients import IFT, gradient_agreement, parameter_gradient, reference_gradient
from deqbench.plugins import get_registry
from deqbench.solvers import GMRES, Status
from deqbench.state import pack
from deqbench.testing import ToyCell, check_gradient

BACKWARD_SOLVERS = get_registry().names("solvers")


def _x(batch: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, generator=gen, dtype=torch.float64)


def _linear_problem(batch=4, dim=40, radius=0.9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, dim, generator=gen, dtype=torch.float64) * radius / dim**0.5
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    calls = [0]

    def f(z):
        calls[0] += 1
        return torch.bmm(a, z[:, :, None]).squeeze(2) + b

    exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b)
    return f, exact, calls


@pytest.mark.parametrize("solver", BACKWARD_SOLVERS)
def test_ift_is_exact_with_every_registered_backward_solver(solver):
    check = check_gradient("ift", options={"solver": solver})
    assert check.rel_error < 1e-6 and check.cosine > 1 - 1e-9


@pytest.mark.parametrize("restart", [40, 7, 3])
def test_gmres_solves_affine_systems_per_sample(restart):
    f, exact, calls = _linear_problem(radius=0.8)
    result = GMRES(restart=restart)(f, torch.zeros_like(exact), max_iter=400, tol=1e-11)
    assert result.status is Status.CONVERGED
    torch.testing.assert_close(result.z, exact, rtol=1e-9, atol=1e-9)
    assert result.nfe == calls[0]  # one observation per call of f: NFE is honest
    with torch.no_grad():
        true_residual = (f(result.z) - result.z).norm(dim=1)
    torch.testing.assert_close(result.abs_residual, true_residual, rtol=1e-3, atol=1e-12)


def test_gmres_batch_equals_each_sample_alone():
    f, exact, _ = _linear_problem(batch=3, radius=0.95)
    batched = GMRES(restart=5)(f, torch.zeros_like(exact), max_iter=300, tol=1e-10)
    a = torch.stack([f(torch.eye(40, dtype=torch.float64)[i].expand(3, -1)) for i in range(40)])
    b = f(torch.zeros_like(exact))
    a = (a - b).permute(1, 2, 0)  # (B, D, D) recovered from f
    for i in range(3):

        def fi(z, i=i):
            return z @ a[i].T + b[i]

        alone = GMRES(restart=5)(
            fi, torch.zeros(1, 40, dtype=torch.float64), max_iter=300, tol=1e-10
        )
        assert int(alone.nstep) == int(batched.nstep[i])
        torch.testing.assert_close(alone.z[0], batched.z[i], rtol=1e-8, atol=1e-10)


def test_gmres_reaches_exactness_within_dim_steps():
    f, exact, _ = _linear_problem(dim=12, radius=2.0)  # naive iteration diverges here
    result = GMRES(restart=12)(f, torch.zeros_like(exact), max_iter=13, tol=1e-10)
    assert result.status is Status.CONVERGED and result.nfe <= 13
    torch.testing.assert_close(result.z, exact, rtol=1e-8, atol=1e-8)


def test_backward_cap_is_honoured_and_never_returns_the_zero_start():
    cell = ToyCell()
    deq = DEQ(cell, f_max_iter=100, f_tol=1e-12, b_max_iter=3, b_tol=1e-14)
    out = pack(deq(_x()))
    grad = torch.ones_like(out)
    out.backward(grad)
    bwd = deq.stats.backward
    assert bwd.nfe == 3 and bwd.nstep <= 3
    assert bwd.status is Status.MAX_ITER and "0/3 samples reached rel tol" in bwd.message
    # The estimate is one of the iterates g1 = v, g2 = Jᵀv + v of the backward's fixed-point
    # iteration from zero: never the zero start, whatever its residual.
    assert bwd.result.best_step.min() >= 1
    assert cell.g.grad is not None and cell.g.grad.abs() > 0


def test_estimator_options_override_the_layer_backward_settings():
    ift = IFT(solver="gmres", max_iter=2, tol=1e-3, stop_mode="abs")
    deq = DEQ(ToyCell(), gradient=ift, f_max_iter=100, f_tol=1e-12, b_max_iter=50, b_tol=1e-9)
    pack(deq(_x())).sum().backward()
    result = deq.stats.backward.result
    assert result.nfe <= 2 and result.stop_mode == "abs" and result.tol == 1e-3
    deq = DEQ(ToyCell(), f_max_iter=100, b_stop_mode="abs", b_tol=1e-9)
    pack(deq(_x())).sum().backward()
    assert deq.stats.backward.result.stop_mode == "abs" and deq.stats.backward.result.tol == 1e-9


def test_a_diverging_backward_is_visible_and_still_returns_a_finite_gradient():
    cell = ToyCell(rho=3.0, seed=1)  # spectral radius of J above 1 at the equilibrium
    deq = DEQ(cell, "anderson", f_max_iter=100, f_tol=1e-10, b_max_iter=200, b_tol=1e-10)
    pack(deq(_x())).sum().backward()
    assert deq.stats.backward.status is Status.DIVERGED
    assert "diverged" in deq.stats.backward.message
    grads = torch.cat([p.grad.flatten() for p in cell.parameters()])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0


def test_repeated_backward_solves_again_with_the_same_answer():
    cell = ToyCell()
    deq = DEQ(cell, f_max_iter=100, f_tol=1e-12, b_tol=1e-12, b_max_iter=100)
    loss = pack(deq(_x())).square().sum()
    loss.backward(retain_graph=True)
    first_stats, first = deq.stats.backward, cell.v.grad.clone()
    loss.backward()
    assert deq.stats.backward is not first_stats  # the second backward solved again
    torch.testing.assert_close(cell.v.grad, 2 * first)


def test_ift_value_is_f_of_the_equilibrium():
    cell = ToyCell()
    deq = DEQ(cell, f_max_iter=5)  # far from converged: the value must still be f(z*)
    out = pack(deq(_x()))
    z_star = deq.stats.forward.result.z
    with torch.no_grad():
        torch.testing.assert_close(out.detach(), bind(cell, _x()).f(z_star), rtol=0, atol=1e-14)


def _loss(state):
    return sum(t.square().sum() for t in state)


def test_reference_gradient_matches_the_dense_implicit_gradient():
    cell = ToyCell()
    x = _x()
    ref = reference_gradient(cell, x, _loss, f_tol=1e-12, b_tol=1e-12)
    assert ref.stats.forward.status is Status.CONVERGED
    assert ref.stats.backward.status is Status.CONVERGED
    # The same gradient by another backward solver, and by the dense formula through the kit.
    fp = parameter_gradient(cell, x, _loss, f_max_iter=200, f_tol=1e-12, b_tol=1e-12,
                            b_max_iter=200)  # fmt: skip
    agree = gradient_agreement(fp.grads, ref.grads)
    assert agree.rel_error < 1e-9 and agree.cosine == pytest.approx(1, abs=1e-12)
    jfb = parameter_gradient(cell, x, _loss, gradient="jfb", f_max_iter=200, f_tol=1e-12)
    rough = gradient_agreement(jfb.grads, ref.grads)
    assert 0.5 < rough.cosine < 0.9999 and rough.rel_error > 1e-3


def test_gradient_agreement_arithmetic():
    ref = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}
    est = {"a": torch.tensor([3.0, 0.0]), "b": None}
    agree = gradient_agreement(est, ref)
    assert agree.rel_error == pytest.approx(4 / 5)
    assert agree.cosine == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        gradient_agreement({}, {})


def test_the_layer_b_solver_is_used_unless_the_estimator_names_its_own():
    deq = DEQ(ToyCell(), b_solver="gmres", b_solver_options={"restart": 4}, f_max_iter=100)
    pack(deq(_x())).sum().backward()
    assert deq.stats.backward.nfe <= 30 and isinstance(deq.b_solver, GMRES)
    own = IFT(solver="fixed-point", max_iter=7, tol=1e-14)
    deq = DEQ(ToyCell(), gradient=own, b_solver="gmres", f_max_iter=100)
    pack(deq(_x())).sum().backward()
    assert deq.stats.backward.nfe == 7  # gmres would have converged well before


def test_double_backward_through_ift_fails_loudly():
    cell = ToyCell()
    x = _x().requires_grad_()
    out = pack(DEQ(cell, f_max_iter=50)(x)).square().sum()
    (gx,) = torch.autograd.grad(out, x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()
