"""The inverse-Jacobian seam: Broyden's estimate against an independent dense Broyden, its
low-rank algebra, and the contract (kept only when asked, a copy, refused where not offered)."""

from __future__ import annotations

import functools

import pytest
import torch

from deqbench.solvers import Anderson, Broyden, FixedPoint, LowRankInverse, Monitor, Solver
from deqbench.solvers import base as solver_base


def _linear(dim: int = 6, batch: int = 3, seed: int = 0):
    """``f(z) = A z + b`` with ‖A‖₂ = 0.5 (one A, a b per sample), in float64."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    a = 0.5 * a / torch.linalg.matrix_norm(a, 2)
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return a, b, (lambda z: z @ a.T + b)


def _dense_broyden(f, z0: torch.Tensor, updates: int) -> torch.Tensor:
    """Good Broyden on ``g = f(z) − z`` for one sample, written out with a dense ``H``:
    ``H ← H + (s − H y) sᵀH / (sᵀ H y)`` from ``H = −I``; returns ``H`` after ``updates``."""
    h = -torch.eye(z0.shape[0], dtype=z0.dtype)
    z, g = z0, f(z0) - z0
    for _ in range(updates):
        z_new = z - h @ g
        g_new = f(z_new) - z_new
        s, y = z_new - z, g_new - g
        h = h + torch.outer(s - h @ y, h.T @ s) / (s @ h @ y)
        z, g = z_new, g_new
    return h


@pytest.fixture(params=["host", "device path"])
def path(request, monkeypatch):
    if request.param == "device path":  # the CUDA code path, run on the CPU
        monkeypatch.setattr(solver_base, "Monitor", functools.partial(Monitor, host=False))
    return request.param


@pytest.mark.parametrize("line_search", [False, True])
@pytest.mark.parametrize("evaluations", [1, 2, 3, 5, 7])
def test_broyden_estimate_is_the_dense_broyden_inverse(path, line_search, evaluations):
    a, b, f = _linear()
    z0 = torch.zeros_like(b)
    result = Broyden(m=20, line_search=line_search)(
        f, z0, max_iter=evaluations, tol=1e-300, keep_inverse=True
    )
    inverse = result.inverse
    # The first evaluation is the start's, the second the first step's: each later one follows
    # an update, and the estimate is the one the next step would have used.
    assert result.nfe == evaluations and inverse.rank == max(0, evaluations - 2)
    w = torch.randn(b.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i in range(b.shape[0]):
        h = _dense_broyden(lambda z, i=i: a @ z + b[i], z0[i], inverse.rank)
        # (I − J)⁻¹ ≈ −H: the forward direction and the adjoint SHINE applies.
        torch.testing.assert_close(inverse.apply(w)[i], -h @ w[i], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(inverse.adjoint(w)[i], -h.T @ w[i], rtol=1e-12, atol=1e-13)


def test_in_one_dimension_one_secant_update_is_the_exact_inverse(path):
    # For f(z) = a z + b the secant slope is exact: after one update H = 1 / (a − 1).
    a = torch.tensor([0.3, -0.7, 0.9], dtype=torch.float64)[:, None]
    f = lambda z: a * z + 1.0  # noqa: E731
    result = Broyden()(f, torch.zeros(3, 1, dtype=torch.float64), max_iter=3, keep_inverse=True)
    assert result.inverse.rank == 1
    w = torch.ones(3, 1, dtype=torch.float64)
    torch.testing.assert_close(result.inverse.adjoint(w), 1 / (1 - a), rtol=4e-16 * 8, atol=0)


def test_the_estimate_is_kept_only_when_asked_and_survives_the_next_solve():
    _, b, f = _linear()
    solver = Broyden(m=4)
    assert solver(f, torch.zeros_like(b), max_iter=6).inverse is None
    first = solver(f, torch.zeros_like(b), max_iter=6, tol=1e-300, keep_inverse=True).inverse
    u, v = first.u.clone(), first.v.clone()
    # The next solve reuses the solver's workspace buffers: the estimate must be a copy.
    solver(lambda z: 0.3 * z - 1.0, torch.ones_like(b), max_iter=6, keep_inverse=True)
    assert torch.equal(first.u, u) and torch.equal(first.v, v)
    assert first.rank == 4 and first.nbytes == u.nbytes + v.nbytes


def test_a_restart_keeps_only_the_pairs_since_it():
    _, b, f = _linear(dim=20)
    result = Broyden(m=3)(f, torch.zeros_like(b), max_iter=9, tol=1e-300, keep_inverse=True)
    assert result.inverse.rank <= 3


@pytest.mark.parametrize("solver", [FixedPoint(), Anderson()])
def test_a_solver_that_offers_no_estimate_refuses_to_keep_one(solver):
    _, b, f = _linear()
    with pytest.raises(ValueError, match="offers no inverse-Jacobian estimate"):
        solver(f, torch.zeros_like(b), keep_inverse=True)


def test_a_solver_that_declares_an_offer_must_keep_it():
    class Liar(FixedPoint):
        offers_inverse = True

    _, b, f = _linear()
    assert isinstance(Liar(), Solver)
    with pytest.raises(ValueError, match=r"set no monitor\.inverse"):
        Liar()(f, torch.zeros_like(b), keep_inverse=True)


def test_low_rank_inverse_algebra_and_shapes():
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, 3, 5, generator=gen), torch.randn(2, 3, 5, generator=gen)
    inverse = LowRankInverse(u, v)
    dense = torch.eye(5) - torch.einsum("bnd,bne->bde", u, v)  # I − Σ u vᵀ per sample
    w = torch.randn(2, 5, generator=gen)
    torch.testing.assert_close(inverse.apply(w), torch.einsum("bde,be->bd", dense, w))
    torch.testing.assert_close(inverse.adjoint(w), torch.einsum("bed,be->bd", dense, w))
    empty = LowRankInverse(u[:, :0], v[:, :0])
    assert torch.equal(empty.adjoint(w), w) and empty.adjoint(w) is not w
    with pytest.raises(ValueError, match=r"\(B, n, D\)"):
        LowRankInverse(u, v[:, :2])
