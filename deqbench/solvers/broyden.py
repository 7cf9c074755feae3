"""Limited-memory "good" Broyden on the inverse Jacobian of ``g(z) = f(z) − z``.

The inverse Jacobian estimate is ``H = −I + Σ u_i v_iᵀ`` (``J_g ≈ −I`` when ``f`` is a mild
map) and the step is ``d = −H g``, so the first step is a plain fixed-point step. Each step
adds one rank-1 pair from the secant condition ``H Δg = Δz``:
``u = (Δz − H Δg) / (vᵀ Δg)``, ``v = Hᵀ Δz``.

Memory is fixed: at most ``m`` pairs per sample, in one preallocated ``(B, 2m, D)`` buffer.
When it is full the estimate restarts from ``−I`` and the newest secant pair is its first. A
restart, not a ring that drops the oldest pair: each pair of the product form was computed
against all older ones, so dropping the oldest leaves an estimate that fits no secant condition,
and on hard problems (ρ = 0.99) that made steps blow up, where restarts converged. Memory does
not grow with ``max_iter`` (the reference code keeps one pair per iteration: about 1.2 GB per
GPU on ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deqbench.solvers.base import Fn, Monitor, Solver

_C1 = 1e-4  # Armijo's sufficient-decrease constant
# Skip an update whose vᵀΔg is below this fraction of ‖v‖‖Δg‖ (a stopped sample, a stalled or
# noisy step): its 1/(vᵀΔg) would blow the estimate up. Relative, so it holds at any scale.
_SKIP = 1e-3


@dataclass(kw_only=True)
class Broyden(Solver):
    """Good Broyden with at most ``m`` rank-1 pairs (restarts from ``−I`` when full).

    ``line_search``: backtrack each step (Armijo on ``‖g‖²`` with the Newton model's slope,
    halving at most ``ls_steps`` times; a sample that never satisfies it keeps its best trial).
    Every trial evaluation of ``f`` is observed like any other, so NFE and the traces count it,
    and since ``f`` runs on the whole batch, one sample's backtrack costs the batch an
    evaluation. Deciding to backtrack reads one flag from the device per trial.
    """

    m: int = 8
    line_search: bool = False
    ls_steps: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m < 1:
            raise ValueError(f"m must be >= 1, got {self.m}")
        if self.ls_steps < 1:
            raise ValueError(f"ls_steps must be >= 1, got {self.ls_steps}")

    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        batch, dim = z0.shape
        m = max(1, min(self.m, monitor.budget - 2))  # pairs that could never be used cost nothing
        # Pair i is rows 2i (u_i) and 2i+1 (v_i), so the first n pairs are one contiguous slice
        # and a single pass over it serves all three products a step needs (big states make
        # the solve memory-bound).
        uv = z0.new_empty(batch, 2 * m, dim)
        rhs = z0.new_empty(batch, 3, dim)  # g_new, Δg, Δz: the vectors multiplied by the pairs
        # coef[:, r, i] weighs (u_i, v_i) for rhs row r; the zeros never change.
        coef = z0.new_zeros(batch, 3, m, 2)
        zero, skip = z0.new_tensor([0.0, _SKIP]).unbind(0)
        # Views made once (on small states, indexing on every step costs as much as arithmetic):
        # per slot, and per count n of pairs in use.
        u_slot, v_slot = uv[:, 0::2].unbind(1), uv[:, 1::2].unbind(1)
        used = [uv[:, : 2 * n] for n in range(m + 1)]
        coef_gdg = [coef[:, :2, :n, 0] for n in range(m + 1)]
        coef_dz = [coef[:, 2, :n, 1] for n in range(m + 1)]
        coef_used = [coef[:, :, :n].view(batch, 3, 2 * n) for n in range(m + 1)]
        g_row, dg, dz = rhs.unbind(1)

        z = z0
        fz = f(z)
        g = fz - z
        if monitor.observe(z, fz, g):
            return
        hg = g.neg()  # H g with H = −I: the first step z − H g is a plain fixed-point step
        n = 0  # pairs in use
        while True:
            z_new, g_new, done = self._step(f, z, g, hg, monitor)
            if done:
                return
            g_row.copy_(g_new)
            torch.sub(g_new, g, out=dg)
            torch.sub(z_new, z, out=dz)
            if n == m:
                n = 0  # restart from −I
            if n:
                # H x = −x + Σ u_i (v_i·x) for x = g_new, Δg;  Hᵀ Δz = −Δz + Σ v_i (u_i·Δz).
                prods = torch.bmm(rhs, used[n].transpose(1, 2)).view(batch, 3, n, 2)
                coef_gdg[n].copy_(prods[:, :2, :, 1])
                coef_dz[n].copy_(prods[:, 2, :, 0])
                h_g, h_dg, v = torch.bmm(coef_used[n], used[n]).sub_(rhs).unbind(1)
            else:
                h_g, h_dg, v = rhs.neg().unbind(1)
            # v·g_new and v·Δg in one pass over v: (B, 1, 2).
            dots = torch.bmm(v.unsqueeze(1), rhs[:, :2].transpose(1, 2)).squeeze(1)
            v_g, den = dots[:, :1], dots[:, 1:]
            scale = torch.linalg.vector_norm(v, dim=1, keepdim=True) * torch.linalg.vector_norm(
                dg, dim=1, keepdim=True
            )
            inv = torch.where(den.abs() > scale.mul_(skip), den.reciprocal(), zero)
            u = torch.sub(dz, h_dg, out=h_dg).mul_(inv)  # zero for a skipped update
            u_slot[n].copy_(u)
            v_slot[n].copy_(v)
            n += 1
            hg = h_g.addcmul_(u, v_g)  # H_new g_new = H g_new + u (v·g_new)
            z, g = z_new, g_new

    def _step(
        self, f: Fn, z: Tensor, g: Tensor, hg: Tensor, monitor: Monitor
    ) -> tuple[Tensor, Tensor, bool]:
        """Step to ``z − H g`` (backtracking if asked); returns ``(z_new, g(z_new), all done?)``."""
        z_new = monitor.where_active(z - hg, z)
        fz = f(z_new)
        g_new = fz - z_new
        if monitor.observe(z_new, fz, g_new):
            return z_new, g_new, True
        if not self.line_search:
            return z_new, g_new, False
        phi0 = g.square().sum(1)
        best = g_new.square().sum(1)
        step = torch.ones_like(phi0)
        searching = monitor.active & (best > (1 - 2 * _C1) * phi0)
        for _ in range(self.ls_steps):
            if not bool(searching.any()):
                break
            step = torch.where(searching, step * 0.5, step)
            # Samples that are done searching are evaluated again at their accepted point.
            z_try = torch.where(searching[:, None], z - step[:, None] * hg, z_new)
            fz = f(z_try)
            g_try = fz - z_try
            if monitor.observe(z_try, fz, g_try):
                return z_try, g_try, True
            phi = g_try.square().sum(1)
            better = (phi < best)[:, None]
            z_new = torch.where(better, z_try, z_new)
            g_new = torch.where(better, g_try, g_new)
            best = torch.minimum(phi, best)
            searching &= monitor.active & (phi > (1 - 2 * _C1 * step) * phi0)
        return z_new, g_new, False
