"""JFB, phantom and unrolled gradients against their explicit formulas, on the tanh cell."""

from __future__ import annotations

import pytest
import torch

from deqbench.deq import DEQ, bind
from deqbench.gradients import JFB, GradContext, Phantom, Unrolled
from deqbench.plugins import get_gradient
from deqbench.solvers import Status
from deqbench_plugins.problems import TanhCell

DIM = 16


@pytest.fixture
def cell():
    return TanhCell(dim=DIM, spectral_norm=0.8).double()


@pytest.fixture
def x():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(4, DIM, generator=gen, dtype=torch.float64)


def _grads(loss, cell):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(cell.parameters()))])


def _equilibrium(cell, x):
    deq = DEQ(cell, f_max_iter=300, f_tol=1e-14, stop_mode="abs").eval()
    with torch.no_grad():
        return deq(x)[0]


def test_jfb_is_one_step_at_the_equilibrium(cell, x):
    z = _equilibrium(cell, x)
    got = _grads(DEQ(cell, "fixed-point", "jfb", f_max_iter=300, f_tol=1e-14)(x)[0].sum(), cell)
    # by hand: tanh(W z* + U x) with z* constant
    want = _grads(torch.tanh(cell.linear(z) + cell.injection(x)).sum(), cell)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("k", "tau"), [(1, 1.0), (3, 0.5), (6, 0.9)])
def test_phantom_is_k_damped_steps_from_the_equilibrium(cell, x, k, tau):
    z = _equilibrium(cell, x)
    deq = DEQ(cell, gradient="phantom", gradient_options={"k": k, "tau": tau}, f_max_iter=300,
              f_tol=1e-14)  # fmt: skip
    got = _grads(deq(x)[0].square().sum(), cell)
    for _ in range(k):
        z = tau * torch.tanh(cell.linear(z) + cell.injection(x)) + (1 - tau) * z
    want = _grads(z.square().sum(), cell)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_phantom_with_one_undamped_step_is_jfb(cell, x):
    a = DEQ(cell, gradient=Phantom(k=1, tau=1.0), f_max_iter=300, f_tol=1e-14)
    b = DEQ(cell, gradient=JFB(), f_max_iter=300, f_tol=1e-14)
    torch.testing.assert_close(_grads(a(x)[0].sum(), cell), _grads(b(x)[0].sum(), cell))


def test_phantom_approaches_ift_as_steps_grow(cell, x):
    def error(k):
        deq = DEQ(cell, gradient=Phantom(k=k, tau=1.0), f_max_iter=300, f_tol=1e-14)
        est = _grads(deq(x)[0].sum(), cell)
        ift = DEQ(cell, f_max_iter=300, f_tol=1e-14, b_max_iter=300, b_tol=1e-14)
        ref = _grads(ift(x)[0].sum(), cell)
        return float((est - ref).norm() / ref.norm())

    errors = [error(k) for k in (1, 5, 20, 120)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-8


@pytest.mark.parametrize("steps", [None, 4])
def test_unrolled_is_autograd_through_the_explicit_loop(cell, x, steps):
    deq = DEQ(cell, gradient=Unrolled(steps=steps), f_max_iter=9)
    out = deq(x)[0]
    n = 9 if steps is None else steps
    z = torch.zeros_like(out)
    for _ in range(n):
        z = torch.tanh(cell.linear(z) + cell.injection(x))
    torch.testing.assert_close(out.detach(), z.detach(), rtol=0, atol=0)
    torch.testing.assert_close(
        _grads(out.sum(), cell), _grads(z.sum(), cell), rtol=1e-12, atol=1e-14
    )
    fwd = deq.stats.forward
    assert fwd.nfe == n and deq.stats.backward is None
    # its statistics are the residuals of the explicit iterates z_0 .. z_{n-1}
    first = (torch.tanh(cell.injection(x)) - 0).norm(dim=1)
    torch.testing.assert_close(fwd.result.abs_trace[0], first.detach())


def test_unrolled_reports_whether_the_stack_reached_the_equilibrium(cell, x):
    deq = DEQ(cell, gradient="unrolled", f_max_iter=3, f_tol=1e-10)
    deq(x)
    assert deq.stats.forward.status is Status.MAX_ITER
    deq = DEQ(cell, gradient="unrolled", f_max_iter=200, f_tol=1e-10)
    deq(x)
    assert deq.stats.forward.status is Status.CONVERGED


def test_estimators_need_the_equilibrium_except_unrolled(cell, x):
    bound = bind(cell, x)
    ctx = GradContext(z0=bound.z0)
    for name in ("ift", "jfb", "phantom"):
        with pytest.raises(ValueError, match="z\\*"):
            get_gradient(name)(bound.f, None, ctx)
    assert Unrolled(steps=2)(bound.f, None, ctx).shape == bound.z0.shape


def test_options_are_validated():
    with pytest.raises(ValueError, match="k must"):
        Phantom(k=0)
    with pytest.raises(ValueError, match="tau"):
        Phantom(tau=0.0)
    with pytest.raises(ValueError, match="steps"):
        Unrolled(steps=0)
    with pytest.raises(ValueError, match="stop_mode"):
        get_gradient("ift", stop_mode="max")
    with pytest.raises(ValueError, match="stop_mode"):
        GradContext(z0=torch.zeros(1, 1), b_stop_mode="max")
