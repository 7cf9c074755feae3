"""TorchDEQ's solvers through the adapter plugin: registered, counted and converging."""

from __future__ import annotations

import sys

import pytest
import torch

from deqbench import get_registry
from deqbench.plugins import get_solver
from deqbench.solvers import Status

pytest.importorskip("torchdeq")

NAMES = ["torchdeq-fixed-point", "torchdeq-anderson", "torchdeq-broyden"]


def affine(rho: float = 0.8, batch: int = 4, dim: int = 24):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    a *= rho / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    answer = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    return (lambda z: z @ a.T + b), b, answer


@pytest.mark.parametrize("name", NAMES)
def test_registered_by_the_torchdeq_plugin(name):
    entry = get_registry().get("solvers", name)
    assert entry.plugin == "torchdeq"
    assert entry.description


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_a_contraction(name):
    f, b, answer = affine()
    calls = 0

    def counted(z):
        nonlocal calls
        calls += 1
        return f(z)

    result = get_solver(name)(counted, torch.zeros_like(b), max_iter=300, tol=1e-10)
    assert result.status is Status.CONVERGED, result.message
    torch.testing.assert_close(result.z, answer, rtol=1e-7, atol=1e-7)
    assert result.nfe == calls == result.abs_trace.shape[0]
    assert result.abs_trace.shape == result.rel_trace.shape == (calls, 4)
    # TorchDEQ runs the batch to its worst sample: one step count for all.
    assert len(set(result.nstep.tolist())) == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("max_iter", [1, 2, 3, 7])
def test_budget_is_honoured(name, max_iter):
    f, b, _ = affine(0.99)
    result = get_solver(name)(f, torch.zeros_like(b), max_iter=max_iter, tol=1e-30)
    assert result.nfe <= max_iter
    assert result.abs_trace.shape[0] == result.nfe
    assert result.status is Status.MAX_ITER


def test_reported_residual_matches_the_trace_row_of_the_best_step():
    f, b, _ = affine()
    result = get_solver("torchdeq-broyden")(f, torch.zeros_like(b), max_iter=50, tol=1e-8)
    abs_r = torch.linalg.vector_norm(f(result.z) - result.z, dim=1)
    # Broyden returns the evaluated point itself: its residual is the reported one.
    torch.testing.assert_close(abs_r, result.abs_residual, rtol=1e-6, atol=1e-12)


def test_options_reach_torchdeq():
    f, b, _ = affine(0.95)
    z0 = torch.zeros_like(b)
    slow = get_solver("torchdeq-fixed-point", tau=0.5)(f, z0, max_iter=500, tol=1e-8)
    fast = get_solver("torchdeq-fixed-point")(f, z0, max_iter=500, tol=1e-8)
    assert slow.nfe > fast.nfe
    short = get_solver("torchdeq-broyden", memory=3)(f, z0, max_iter=200, tol=1e-8)
    assert short.status is Status.CONVERGED


def test_diverging_map_is_reported():
    result = get_solver("torchdeq-fixed-point")(
        lambda z: 3 * z + 1, torch.zeros(2, 3, dtype=torch.float64), max_iter=30
    )
    assert result.status is Status.DIVERGED


def test_registers_nothing_without_torchdeq(monkeypatch):
    from deqbench_plugins import torchdeq_adapter

    monkeypatch.setitem(sys.modules, "torchdeq", None)  # makes `import torchdeq` fail
    monkeypatch.setitem(sys.modules, "torchdeq.solver", None)
    registered = []
    torchdeq_adapter.register_solvers(register=lambda *args, **kw: registered.append(args))
    assert registered == []


@pytest.mark.parametrize("b_solver", ["fixed-point", "anderson", "broyden"])
def test_torchdeq_ift_matches_the_exact_gradient(b_solver):
    from deqbench.gradients import gradient_agreement, parameter_gradient, reference_gradient
    from deqbench.plugins import get_cell, get_gradient

    assert get_registry().get("gradients", "torchdeq-ift").plugin == "torchdeq"
    cell = get_cell("tanh", dim=16, spectral_norm=0.7).double()
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.randn(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss(state):
        return (state[0] @ w).mean()

    exact = reference_gradient(cell, x, loss, f_tol=1e-12, b_tol=1e-12)
    estimator = get_gradient("torchdeq-ift", solver=b_solver, max_iter=200, tol=1e-11)
    got = parameter_gradient(
        cell, x, loss, gradient=estimator, solver="anderson", f_max_iter=200, f_tol=1e-12
    )
    assert got.stats.backward is not None and got.stats.backward.nfe <= 200
    agreement = gradient_agreement(got.grads, exact.grads)
    assert agreement.rel_error < 1e-8, agreement


def test_torchdeq_ift_rejects_unknown_solver():
    from deqbench.plugins import get_gradient

    with pytest.raises(ValueError, match="solver must be one of"):
        get_gradient("torchdeq-ift", solver="gmres")
