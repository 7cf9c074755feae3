"""Conformance kit for gradient estimators: ``check_gradient("my-estimator")``.

It runs the estimator through the DEQ layer on a small two-tensor contraction in float64 and
checks what every estimator owes: the output has the state's shapes and the value ``f(z*)``,
the backward reaches every parameter and the input with finite values, and a second backward
(``retain_graph``) gives the same gradient. The built-ins are then held to their exact
formulas: ``ift`` to the dense implicit gradient ``(I − J)⁻ᵀ`` (relative error < 1e-6),
``jfb`` to one step, ``shine`` to the adjoint of its Broyden forward's inverse estimate,
``refine`` to an error below its starting estimate's (and to ``ift`` when long),
``phantom`` to its ``k`` explicit damped steps (and, with many steps at ``tau = 1``, to the
implicit gradient), ``unrolled`` to autograd through the explicit loop.
Any other estimator must point where the implicit gradient points (``min_cosine``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deqbench.deq import DEQ, bind
from deqbench.gradients import IFT, JFB, SHINE, GradientEstimator, Phantom, Refine, Unrolled
from deqbench.measure.diagnostics import dense_jacobian
from deqbench.plugins import get_gradient
from deqbench.solvers import Broyden, FixedPoint
from deqbench.solvers.base import Fn
from deqbench.state import pack
from deqbench.testing.toys import ToyCell

_TIGHT = 1e-12  # float64 solves of a rho = 0.5 contraction reach this in ~40 steps


@dataclass(frozen=True)
class GradientCheck:
    """What the kit measured for one estimator against the dense implicit gradient."""

    name: str
    cosine: float
    rel_error: float
    #: NFE of the backward solve the estimator recorded (`GradContext.solve_backward`); None
    #: when it recorded none, as estimators that solve nothing (jfb, phantom) do
    b_nfe: int | None = None


def _flat(grads: list[Tensor | None]) -> Tensor:
    return torch.cat([g.flatten() for g in grads if g is not None])


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _dense_implicit(f: Fn, z: Tensor, c: Tensor, wrt: list[Tensor]) -> Tensor:
    """``cᵀ dz*/dθ = uᵀ ∂f/∂θ`` with ``u = (I − J)⁻ᵀ c``, J dense per sample."""
    jac = dense_jacobian(f, z).detach()
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    u = torch.linalg.solve((eye - jac).transpose(1, 2), c[:, :, None]).squeeze(2)
    return _flat(list(torch.autograd.grad(f(z), wrt, u, allow_unused=True)))


def _explicit(f: Fn, z: Tensor, steps: int, tau: float, c: Tensor, wrt: list[Tensor]) -> Tensor:
    """Autograd through ``steps`` explicit damped steps from ``z``."""
    for _ in range(steps):
        z = tau * f(z) + (1 - tau) * z
    return _flat(list(torch.autograd.grad((c * z).sum(), wrt, allow_unused=True)))


def _gradient(deq: DEQ, est: GradientEstimator, x: Tensor, c: Tensor, wrt: list[Tensor]) -> Tensor:
    """The gradient of ``c · z*`` through ``deq`` with estimator ``est``."""
    deq.gradient = est
    return _flat(list(torch.autograd.grad((c * pack(deq(x))).sum(), wrt, allow_unused=True)))


def _check_refine(est: Refine, name: str, first: Tensor, exact: Tensor, grad: Any) -> None:
    """Refine lands closer to the exact gradient than the estimate it starts from, and a long
    refinement reaches it. ``grad(estimator)``: the gradient with another estimator."""
    error, origin = _rel(first, exact), _rel(grad(SHINE() if est.needs_inverse else JFB()), exact)
    assert error < origin, f"{name}: error {error:.2e} is not below its start's {origin:.2e}"
    long = grad(Refine(start=est.start, solver=est.solver, max_iter=200, tol=_TIGHT))
    assert _rel(long, exact) < 1e-6, f"{name}: a long refinement does not reach ift"


def check_gradient(
    estimator: str | GradientEstimator,
    *,
    options: dict[str, Any] | None = None,
    batch: int = 3,
    seed: int = 0,
    min_cosine: float = 0.5,
) -> GradientCheck:
    """Check a registered estimator (by name, built with ``options``) or an instance.

    Raises AssertionError naming the first check that fails.
    """
    name = estimator if isinstance(estimator, str) else type(estimator).__name__
    est = get_gradient(estimator, **(options or {})) if isinstance(estimator, str) else estimator
    cell = ToyCell(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *cell.input_shape, generator=gen, dtype=torch.float64)
    x.requires_grad_()
    wrt = [*cell.parameters(), x]
    # An estimator that reuses the forward's inverse estimate gets Broyden, keeping every pair.
    solver = Broyden(m=200) if est.needs_inverse else FixedPoint()
    deq = DEQ(
        cell,
        solver,
        est,
        f_max_iter=200,
        f_tol=_TIGHT,
        b_max_iter=200,
        b_tol=_TIGHT,
    )

    out = deq(x)
    z0 = cell.init_state(cell.inject(x))
    assert len(out) == len(z0), f"{name}: {len(out)} state tensors, expected {len(z0)}"
    for o, s in zip(out, z0, strict=True):
        assert o.shape == s.shape and o.dtype == s.dtype, f"{name}: output {o.shape} {o.dtype}"
    assert deq.stats.forward is not None, f"{name}: no forward statistics recorded"
    z_out = pack(out)
    c = torch.randn(z_out.shape, generator=gen, dtype=torch.float64)
    loss = (c * z_out).sum()
    grads = torch.autograd.grad(loss, wrt, retain_graph=True, allow_unused=True)
    missing = [i for i, g in enumerate(grads) if g is None]
    assert not missing, f"{name}: no gradient reaches inputs {missing} of [*parameters, x]"
    first = _flat(list(grads))
    again = _flat(list(torch.autograd.grad(loss, wrt, allow_unused=True)))
    assert torch.isfinite(first).all(), f"{name}: non-finite gradient"
    assert torch.equal(first, again), f"{name}: a second backward gives a different gradient"
    stats = deq.stats
    with torch.no_grad():
        assert not any(t.requires_grad for t in deq(x)), f"{name}: a graph under no_grad"

    with torch.no_grad():  # the exact references, at a tightly solved equilibrium
        start = bind(cell, x)
        z = deq.solver(start.f, start.z0, max_iter=500, tol=1e-14, stop_mode="abs").z

    # Each reference binds the cell afresh: the weight-norm graph of reset() is freed per use.
    def f() -> Fn:
        return bind(cell, x).f

    if not est.unrolls_forward:  # an unrolled stack's value is its last layer's, checked below
        assert torch.allclose(z_out, f()(z).detach(), atol=1e-9), f"{name}: value is not f(z*)"
    exact = _dense_implicit(f(), z, c, wrt)
    cosine = float(first @ exact / (first.norm() * exact.norm()))
    b_nfe = stats.backward.nfe if stats.backward is not None else None
    check = GradientCheck(name, cosine, _rel(first, exact), b_nfe)

    if isinstance(est, SHINE):
        start = bind(cell, x)  # the forward again: the same solve, so the same estimate
        kept = solver(start.f, start.z0, max_iter=200, tol=_TIGHT, keep_inverse=True)
        assert kept.inverse is not None, f"{name}: Broyden kept no inverse estimate"
        fz = start.f(kept.z)
        grads = torch.autograd.grad(fz, wrt, kept.inverse.adjoint(c), allow_unused=True)
        ref = _flat(list(grads))
        assert _rel(first, ref) < 1e-12, f"{name}: not the forward estimate's adjoint"
    elif isinstance(est, Refine):
        _check_refine(est, name, first, exact, lambda other: _gradient(deq, other, x, c, wrt))
    elif isinstance(est, IFT):
        assert check.rel_error < 1e-6, f"{name}: relative error {check.rel_error:.2e} vs dense"
        assert stats.backward is not None, f"{name}: no backward statistics recorded"
    elif isinstance(est, JFB):
        ref = _explicit(f(), z, 1, 1.0, c, wrt)
        assert _rel(first, ref) < 1e-9, f"{name}: not the one-step gradient"
    elif isinstance(est, Phantom):
        ref = _explicit(f(), z, est.k, est.tau, c, wrt)
        assert _rel(first, ref) < 1e-9, f"{name}: not {est.k} damped steps"
        deq.gradient = Phantom(k=200, tau=1.0)
        loss = (c * pack(deq(x))).sum()
        long = _flat(list(torch.autograd.grad(loss, wrt, allow_unused=True)))
        assert _rel(long, exact) < 1e-6, f"{name}: many undamped steps do not reach ift"
    elif isinstance(est, Unrolled):
        steps = deq.f_max_iter if est.steps is None else est.steps
        start = bind(cell, x)
        z_k = start.z0
        for _ in range(steps):
            z_k = start.f(z_k)
        assert torch.allclose(z_out, z_k.detach(), atol=1e-12), f"{name}: value is not z_{steps}"
        ref = _flat(list(torch.autograd.grad((c * z_k).sum(), wrt, allow_unused=True)))
        assert _rel(first, ref) < 1e-9, f"{name}: not autograd through {steps} steps"
    else:
        assert check.cosine >= min_cosine, f"{name}: cosine {check.cosine:.3f} with ift"
    return check
