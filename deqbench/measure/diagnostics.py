"""Diagnostics of ``J = ∂f/∂z`` at an equilibrium: its spectral radius and, for small states,
the dense matrix.

The spectral radius decides whether naive iteration converges and how fast. Power iteration
fails when the dominant eigenvalues are a complex pair (or ±ρ): the iterate rotates instead of
aligning, and its Rayleigh quotient can read 0.1 where the truth is 0.9. An Arnoldi process
builds a Krylov basis and reads the eigenvalues of its small Hessenberg matrix, complex ones
included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deqbench.solvers.base import Fn
from deqbench.solvers.gmres import orthogonalize, safe_divide


def _vjp_operator(f: Fn, z: Tensor):
    """``u ↦ uᵀ J`` per sample, through one application of ``f`` at ``z`` kept for reuse."""
    z = z.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)

    def vjp(u: Tensor, create_graph: bool = False) -> Tensor:
        (out,) = torch.autograd.grad(
            fz, z, u, retain_graph=True, create_graph=create_graph, allow_unused=True
        )
        return torch.zeros_like(u) if out is None else out

    return vjp


def spectral_radius(
    f: Fn, z: Tensor, *, k: int = 50, generator: torch.Generator | None = None
) -> Tensor:
    """(B,) estimates of the spectral radius of ``∂f/∂z`` at ``z`` (B, D), one per sample.

    ``k`` Arnoldi steps on ``Jᵀ`` (same eigenvalues as ``J``), each one VJP for the whole
    batch, from a random start; the answer is the largest ``|λ|`` among the eigenvalues of the
    ``k × k`` Hessenberg matrix. It is exact once ``k ≥ D``; below that the outermost
    eigenvalues, the ones that matter here, converge first, typically from below (within 2 %
    at ``k = 50`` on near-orthogonal 256-dimensional maps). Memory: a ``(B, k + 1, D)`` basis.
    A sample whose ``z`` or Jacobian products are not finite reads NaN.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batch, dim = z.shape
    radius = z.new_full((batch,), float("nan"))
    if not bool(torch.isfinite(z).all()):  # a diverged solve: nothing to diagnose
        return radius
    vjp = _vjp_operator(f, z)
    k = min(k, dim)
    start = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    basis = z.new_zeros(batch, k + 1, dim)
    hess = z.new_zeros(batch, k + 1, k)
    basis[:, 0] = safe_divide(start, torch.linalg.vector_norm(start, dim=1))
    for j in range(k):
        h, w = orthogonalize(basis[:, : j + 1], vjp(basis[:, j]))
        hn = torch.linalg.vector_norm(w, dim=1)
        hess[:, : j + 1, j] = h
        hess[:, j + 1, j] = hn
        basis[:, j + 1] = safe_divide(w, hn)  # zero after an invariant subspace: λ = 0 added
    # LAPACK must never see a non-finite matrix (MKL's eigvals segfaults on NaN): a sample
    # whose Jacobian products overflowed gets NaN, the others their estimate.
    square = hess[:, :k, :k]
    finite = torch.isfinite(square).flatten(1).all(dim=1)
    if bool(finite.any()):
        radius[finite] = torch.linalg.eigvals(square[finite]).abs().amax(dim=1).to(z.dtype)
    return radius


def dense_jacobian(f: Fn, z: Tensor, *, create_graph: bool = False) -> Tensor:
    """(B, D, D) the per-sample Jacobians ``∂f(z)_b/∂z_b``, by ``D`` VJPs (small ``D`` only).

    ``create_graph`` keeps it differentiable in ``f``'s parameters.
    """
    vjp = _vjp_operator(f, z)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    rows = [vjp(eye[i].expand_as(z), create_graph) for i in range(z.shape[1])]
    return torch.stack(rows, dim=1)
