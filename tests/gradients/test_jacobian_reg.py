"""The Hutchinson Jacobian penalty: exact per probe, unbiased, differentiable, and wired into
the DEQ layer."""

from __future__ import annotations

import pytest
import torch

from deqbench.deq import DEQ, bind
from deqbench.gradients.regularization import hutchinson_frobenius, jacobian_penalty
from deqbench.measure.diagnostics import dense_jacobian
from deqbench.testing import ToyCell


def _problem(seed=0):
    cell = ToyCell(rho=0.9, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        z = DEQ(cell, f_max_iter=200, f_tol=1e-12).eval()(x)
    bound = bind(cell, x)
    return cell, bound.f, torch.cat([z[0], z[1].flatten(1)], 1)


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_each_probe_gives_exactly_v_j_j_v(dist):
    _, f, z = _problem()
    est = hutchinson_frobenius(
        f, z, n_samples=3, dist=dist, generator=torch.Generator().manual_seed(7)
    )
    gen = torch.Generator().manual_seed(7)
    jac = dense_jacobian(f, z)
    total = torch.zeros(z.shape[0], dtype=z.dtype)
    for _ in range(3):
        if dist == "gaussian":
            v = torch.randn(z.shape, generator=gen, dtype=z.dtype)
        else:
            v = torch.randint(0, 2, z.shape, generator=gen).to(z.dtype) * 2 - 1
        total += torch.einsum("bi,bij->bj", v, jac).square().sum(1)
    torch.testing.assert_close(est.detach(), total / 3, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("dist", "rtol"), [("gaussian", 0.06), ("rademacher", 0.03)])
def test_the_estimate_is_unbiased(dist, rtol):
    _, f, z = _problem()
    exact = dense_jacobian(f, z).square().sum((1, 2))
    gen = torch.Generator().manual_seed(1)
    est = hutchinson_frobenius(f, z, n_samples=2000, dist=dist, generator=gen, create_graph=False)
    torch.testing.assert_close(est, exact, rtol=rtol, atol=0)


def test_the_penalty_gradient_is_the_exact_frobenius_gradient_in_expectation():
    cell, f, z = _problem()
    params = list(cell.parameters())
    gen = torch.Generator().manual_seed(2)
    penalty = jacobian_penalty(f, z, n_samples=3000, dist="rademacher", generator=gen)
    got = torch.cat([g.flatten() for g in torch.autograd.grad(penalty, params)])
    cell2, f2, _ = _problem()
    exact = dense_jacobian(f2, z, create_graph=True).square().sum((1, 2)).mean() / z.shape[1]
    want = torch.cat([g.flatten() for g in torch.autograd.grad(exact, list(cell2.parameters()))])
    torch.testing.assert_close(penalty.detach(), exact.detach(), rtol=0.03, atol=0)
    assert float((got - want).norm() / want.norm()) < 0.05


def test_the_layer_adds_a_differentiable_penalty():
    cell = ToyCell(rho=0.9)
    x = torch.randn(3, 5, dtype=torch.float64)
    deq = DEQ(cell, "anderson", "jfb", f_max_iter=50, jac_reg_weight=2.0, jac_reg_samples=2)
    deq(x)
    assert deq.stats.jac_loss is not None and deq.stats.jac_loss > 0
    assert deq.stats.as_dict()["jac_loss"] == pytest.approx(deq.stats.jac_loss.item())
    deq.jac_reg_loss().backward()
    assert cell.v.grad is not None and cell.v.grad.abs().sum() > 0
    assert cell.u.grad is not None and cell.u.grad.abs().sum() > 0  # via tanh'(Wz* + Ux)


def test_bad_options_are_rejected():
    _, f, z = _problem()
    with pytest.raises(ValueError, match="probe"):
        hutchinson_frobenius(f, z, dist="uniform")
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_frobenius(f, z, n_samples=0)
    with pytest.raises(ValueError, match="jac_reg"):
        DEQ(ToyCell(), jac_reg_freq=1.5)
