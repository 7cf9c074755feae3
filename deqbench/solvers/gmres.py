"""Restarted GMRES for affine fixed-point problems, batched with one Krylov space per sample.

For ``f(z) = A z + b`` the fixed point solves ``(I − A) z = b``. GMRES only needs products with
``M = I − A``, which it gets from ``f`` itself: ``A v = (f(z + s v) − f(z)) / s`` at the cycle's
start ``z`` with ``f(z)`` known, so one call of ``f`` per Krylov vector. The step ``s`` is the
sample's scale ``max(‖z‖, ‖f(z)‖)``, which keeps the difference free of cancellation.
This is the implicit backward's system ``g = Jᵀ g + v``; a non-affine ``f`` gets wrong answers.

NFE accounting: every call of ``f`` is followed by exactly one ``monitor.observe``. After Krylov
step ``j`` the observed iterate is ``z + V_j y_j`` with ``f`` there known from the Arnoldi
relation (exact for affine ``f``), so ``nfe`` counts true calls of ``f``. Each restart calls
``f`` once more at the current iterate and observes that true residual (the trace repeats the
iterate once per restart), so rounding drift in the Arnoldi residual never hides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from deqbench.solvers.base import Fn, Monitor, Solver


def orthogonalize(basis: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Orthogonalise ``w`` (B, D) against the orthonormal rows of ``basis`` (B, k, D).

    Classical Gram–Schmidt applied twice (CGS2): as stable as modified Gram–Schmidt but two
    batched matrix products instead of ``k`` small ones. Returns the coefficients (B, k) and
    the orthogonalised ``w``.
    """
    h = torch.bmm(basis, w[:, :, None]).squeeze(2)
    w = w - torch.bmm(h[:, None, :], basis).squeeze(1)
    h2 = torch.bmm(basis, w[:, :, None]).squeeze(2)
    return h + h2, w - torch.bmm(h2[:, None, :], basis).squeeze(1)


def safe_divide(w: Tensor, norm: Tensor) -> Tensor:
    """``w / norm`` per sample, with zero where ``norm`` is zero (a lucky breakdown)."""
    tiny = torch.finfo(norm.dtype).tiny
    return torch.where(norm[:, None] > tiny, w / norm.clamp_min(tiny)[:, None], 0.0)


@dataclass(kw_only=True)
class GMRES(Solver):
    """GMRES(m) for affine ``f``: minimal residual over a ``restart``-dimensional Krylov space.

    Memory: a ``(B, restart + 1, D)`` basis (kept between solves on the CPU). Cost per step:
    one call of ``f``, two batched products with the basis and a tiny least-squares solve.
    """

    affine_only: ClassVar[bool] = True
    restart: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.restart < 1:
            raise ValueError(f"restart must be >= 1, got {self.restart}")

    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        batch, dim = z0.shape
        m = min(self.restart, dim)  # the Krylov space cannot outgrow the state
        basis = monitor.buffer("basis", batch, m + 1, dim)  # zeroed at each (re)start
        hess = z0.new_zeros(batch, m + 1, m)
        z = z0
        while True:
            fz = f(z)  # a true residual at every (re)start
            r = fz - z
            if monitor.observe(z, fz, r):
                return
            z, done = self._cycle(f, z, fz, r, basis, hess, monitor)
            if done:
                return

    def _cycle(
        self, f: Fn, z: Tensor, fz: Tensor, r: Tensor, basis: Tensor, hess: Tensor, mon: Monitor
    ) -> tuple[Tensor, bool]:
        """One Arnoldi cycle from ``z``; returns the last observed iterates and "stop now"."""
        beta = torch.linalg.vector_norm(r, dim=1)
        scale = torch.maximum(
            torch.linalg.vector_norm(z, dim=1), torch.linalg.vector_norm(fz, dim=1)
        )
        scale = scale.clamp_min(torch.finfo(scale.dtype).tiny)[:, None]
        basis.zero_()
        hess.zero_()
        basis[:, 0] = safe_divide(r, beta)
        rhs = z.new_zeros(z.shape[0], hess.shape[1])
        rhs[:, 0] = beta
        current = z
        for j in range(hess.shape[2]):
            v = basis[:, j]
            mv = v - (f(z + scale * v) - fz) / scale  # (I − A) v
            h, w = orthogonalize(basis[:, : j + 1], mv)
            hn = torch.linalg.vector_norm(w, dim=1)
            hess[:, : j + 1, j] = h
            hess[:, j + 1, j] = hn
            basis[:, j + 1] = safe_divide(w, hn)
            # min ‖β e₁ − H y‖; pinv copes with the rank loss after a lucky breakdown.
            h_j = hess[:, : j + 2, : j + 1]
            y = torch.bmm(torch.linalg.pinv(h_j), rhs[:, : j + 2, None])
            z_j = z + torch.bmm(y.transpose(1, 2), basis[:, : j + 1]).squeeze(1)
            small_r = rhs[:, : j + 2] - torch.bmm(h_j, y).squeeze(2)
            r_j = torch.bmm(small_r[:, None, :], basis[:, : j + 2]).squeeze(1)  # = f(z_j) − z_j
            current = torch.where(mon.active[:, None], z_j, current)  # stopped samples stay
            if mon.observe(z_j, z_j + r_j, r_j):
                return current, True
        return current, False
