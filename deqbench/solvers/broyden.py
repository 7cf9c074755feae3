"""Limited-memory "good" Broyden on the inverse Jacobian of ``g(z) = f(z) − z``.

The inverse Jacobian estimate is ``H = −I + Σ u_i v_iᵀ`` (``J_g ≈ −I`` when ``f`` is a mild
map) and the step is ``d = −H g``, so the first step is a plain fixed-point step. Each step
adds one rank-1 pair from the secant condition ``H Δg = Δz``:
``u = (Δz − H Δg) / (vᵀ Δg)``, ``v = Hᵀ Δz``.

Since the last step was ``Δz = t·d = −t·H g`` (``t = 1`` without a line search), everything
the update needs follows from ``p = H g_new``, ``v`` and two dot products, without forming
``Δg`` at all: ``H Δg = p + Δz/t``, ``vᵀΔg = vᵀg_new + ‖Δz‖²/t`` and, for ``t = 1``,
``u = −p / vᵀΔg`` and the next step ``d = −p·‖Δz‖² / vᵀΔg``. One buffer holds ``g_new``,
``Δz`` and the pairs, so a step reads the pairs twice: once for all the dot products
(``‖Δz‖²`` among them) and once to form ``p`` and ``v`` together. On the host that second
pass also writes the new pair and the next iterate, so ``p`` and ``v`` are never stored.

Memory is fixed: at most ``m`` pairs per sample, in one preallocated ``(B, 2 + 2m, D)``
buffer. When it is full the estimate restarts from ``−I``, with the newest secant pair as its
first (the only step that forms ``Δg``, once every ``m`` steps). A restart, not a
ring that drops the oldest pair: each pair of the product form was computed against all older
ones, so dropping the oldest leaves an estimate that fits no secant condition, and on hard
problems (ρ = 0.99) that made steps blow up, where restarts converged. Memory does not grow
with ``max_iter`` (the reference code keeps one pair per iteration: about 1.2 GB per GPU on
ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from deqbench.solvers import host_kernels
from deqbench.solvers.base import Fn, Monitor, Solver
from deqbench.solvers.host_kernels import views
from deqbench.solvers.inverse import LowRankInverse

_C1 = 1e-4  # Armijo's sufficient-decrease constant
# Skip an update whose vᵀΔg = ΔzᵀHΔg is below this fraction of ‖Δz‖² (its value when H fits the
# map exactly): a stopped sample, a stalled or noisy step, whose 1/(vᵀΔg) would blow the
# estimate up (by more than ~30× here). Relative, so it holds at any scale. Over five seeds of
# the hard conv cell, 3e-2 took as few evaluations as the reference's test on ‖v‖‖Δg‖, which
# needs two more passes over the state per step; 1e-3 took 4 % more.
_SKIP = 3e-2


@dataclass(kw_only=True)
class Broyden(Solver):
    """Good Broyden with at most ``m`` rank-1 pairs (restarts from ``−I`` when full).

    ``line_search``: backtrack each step (Armijo on ``‖g‖²`` with the Newton model's slope,
    halving at most ``ls_steps`` times; a sample that never satisfies it keeps its best trial).
    Every trial evaluation of ``f`` is observed like any other, so NFE and the traces count it,
    and since ``f`` runs on the whole batch, one sample's backtrack costs the batch an
    evaluation. Deciding to backtrack reads one flag from the device per trial.
    """

    offers_inverse: ClassVar[bool] = True  # H, for SHINE: the pairs in use when it stops

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
        host = monitor.host and host_kernels.handles(z0.dtype)
        # Rows 0 and 1: g_new and Δz; pair i: rows 2 + 2i (u_i) and 3 + 2i (v_i), in a
        # (B, rows, D) view for the batched products. On the host the rows are laid out one
        # after another, each a (B, D) block: the kernels' loops vectorise over those.
        if host:
            w = monitor.buffer("rows", 2 + 2 * m, batch, dim).transpose(0, 1)
        else:
            w = monitor.buffer("rows", batch, 2 + 2 * m, dim)
        g_row, dz_row = w[:, 0], w[:, 1]
        rhs = w[:, :2]
        # coef[:, 0] weighs the rows into p = H g_new = −g_new + Σ u_i (v_i·g_new), coef[:, 1]
        # into v = Hᵀ Δz = −Δz + Σ v_i (u_i·Δz); entries never written stay zero.
        coef = z0.new_zeros(batch, 2, 2 + 2 * m)
        coef[:, 0, 0] = coef[:, 1, 1] = -1
        # On the host the full steps' update is one kernel that never forms p and v.
        fused = host and not self.line_search
        pv = None if fused else monitor.buffer("pv", batch, 2, dim)  # p and v
        p, v = (None, None) if pv is None else pv.unbind(1)
        # Views per count n of pairs in use (made once: on small states, indexing on every
        # step costs as much as arithmetic).
        used = [w[:, : 2 + 2 * n] for n in range(m + 1)]
        used_t = [x.transpose(1, 2) for x in used]
        coef_used = [coef[:, :, : 2 + 2 * n] for n in range(m + 1)]
        u_slot = [w[:, 2 + 2 * n] for n in range(m)]
        v_slot = [w[:, 3 + 2 * n] for n in range(m)]
        secant = _Secant(z0, coef, m, host)
        # On the host, one kernel records each step: g, Δz, their norms and the dot products.
        record = _HostRecord(monitor, w, secant) if host else None

        z = z0
        fz = f(z)
        torch.sub(fz, z, out=g_row)
        if monitor.observe(z, fz, g_row):
            return _offer(monitor, w, 0)
        # The next step is d·scale (scale None: d), d = −H g: first H = −I, a plain step.
        # `step` holds d where it is not p.
        step = monitor.buffer("step", batch, dim).copy_(g_row)
        d, scale = step, None
        z_new = None  # the next iterate, where the update formed it already
        g_prev = monitor.buffer("g_prev", batch, dim)  # g before a restart (once every m steps)
        n = 0  # pairs in use
        while True:
            if record is not None:  # a restart needs no dot products with the pairs
                record.pairs = 0 if n == m else n
            if z_new is None:
                z_new = self._advance(z, d, scale, monitor)
            z_new, t, done = self._step(f, z, z_new, d, scale, g_row, dz_row, monitor, record)
            if done:  # the n pairs in use are the estimate at the last iterate
                return _offer(monitor, w, n)
            z, z_new = z_new, None
            if n == m:  # full: restart from −I, with the newest secant pair as its first
                if fused:
                    z_new = monitor.next_iterate(z)
                    record.restart(z, g_prev, z_new)
                else:
                    d = self._restart(dz_row, g_row, g_prev, u_slot[0], v_slot[0], step)
                    scale = None
                n = 0
            else:
                # All dot products of g_new and Δz with themselves and the pairs, in one pass
                # (on the host the record took them); the pairs' weights in p and v, v·g_new
                # and the update's factors follow.
                if record is None or t is not None:
                    torch.bmm(rhs, used_t[n], out=secant.prods[n])
                neg_inv, neg_factor = secant(n)
                if fused:  # one pass: see the kernel
                    z_new = monitor.next_iterate(z)
                    record.update(z, n, z_new)
                else:
                    torch.bmm(coef_used[n], used[n], out=pv)
                    if t is None:
                        torch.mul(p, neg_inv, out=u_slot[n])  # u = −p / vᵀΔg
                        # −H_new g_new = −p·‖Δz‖² / vᵀΔg (p lives until the next step)
                        d, scale = p, neg_factor
                    else:
                        vg, dz2 = secant.vg, secant.prods[n][:, 1, 1]
                        d = self._searched_update(p, dz_row, u_slot[n], vg, dz2, t, step)
                        scale = None
                    v_slot[n].copy_(v)
            n += 1
            if n == m:  # the next step restarts, and needs this g
                g_prev.copy_(g_row)

    @staticmethod
    def _advance(z: Tensor, d: Tensor, scale: Tensor | None, monitor: Monitor) -> Tensor:
        """The iterate ``z + d·scale`` (scale None: ``z + d``), in a `next_iterate` buffer."""
        z_new = monitor.next_iterate(z)
        if scale is None:
            return torch.add(z, d, out=z_new)
        return torch.addcmul(z, d, scale, out=z_new)

    def _step(
        self,
        f: Fn,
        z: Tensor,
        z_new: Tensor,
        d: Tensor,
        scale: Tensor | None,
        g: Tensor,
        dz: Tensor,
        monitor: Monitor,
        record: _HostRecord | None,
    ) -> tuple[Tensor, Tensor | None, bool]:
        """Step to ``z_new = z + d·scale`` (backtracking along ``d·scale`` if asked), leaving
        ``g(z_new)`` in ``g`` and ``z_new − z`` in ``dz``; returns ``(z_new, t, all done?)`` with
        ``t`` the step length per sample (None: all 1). ``record``: the host kernel, where it
        runs."""
        if self.line_search:
            phi0 = g.square().sum(1)
            d = d if scale is None else d * scale
        z_new = monitor.hold_diverged(z_new, z)
        fz = f(z_new)
        if record is not None and not self.line_search:
            record(z, z_new, fz)
            return z_new, None, monitor.observe_norms(z_new)
        torch.sub(fz, z_new, out=g)
        if monitor.observe(z_new, fz, g):
            return z_new, None, True
        if not self.line_search:
            torch.sub(z_new, z, out=dz)
            return z_new, None, False
        best = g.square().sum(1)
        step = torch.ones_like(best)
        t = step.clone()
        searching = monitor.active & (best > (1 - 2 * _C1) * phi0)
        for _ in range(self.ls_steps):
            if not bool(searching.any()):
                break
            step = torch.where(searching, step * 0.5, step)
            # Samples that are done searching are evaluated again at their accepted point.
            z_try = torch.where(searching[:, None], z + step[:, None] * d, z_new)
            fz = f(z_try)
            g_try = fz - z_try
            if monitor.observe(z_try, fz, g_try):
                return z_try, None, True
            phi = g_try.square().sum(1)
            better = phi < best
            z_new = torch.where(better[:, None], z_try, z_new)
            torch.where(better[:, None], g_try, g, out=g)
            t = torch.where(better, step, t)
            best = torch.minimum(phi, best)
            searching &= monitor.active & (phi > (1 - 2 * _C1 * step) * phi0)
        torch.sub(z_new, z, out=dz)
        return z_new, t, False

    @staticmethod
    def _restart(dz: Tensor, g: Tensor, g_prev: Tensor, u: Tensor, v: Tensor, d: Tensor) -> Tensor:
        """Writes the one pair of ``H = −I`` updated with the secant ``(Δz, Δg)`` into ``u``,
        ``v``, and the next step ``d = −H g`` into ``d``, which it returns. Overwrites
        ``g_prev`` (with ``Δg``).

        With ``H = −I``: ``v = −Δz``, ``vᵀΔg = −Δz·Δg``, ``u = (Δz + Δg) / vᵀΔg``.
        """
        dg = torch.sub(g, g_prev, out=g_prev)
        den = -torch.linalg.vecdot(dz, dg)
        dz2 = torch.linalg.vecdot(dz, dz)
        ok = (den.abs() > _SKIP * dz2) & den.isfinite()
        inv = torch.where(ok, den.reciprocal(), 0.0)[:, None]
        torch.add(dz, dg, out=u).mul_(inv)
        torch.neg(dz, out=v)
        return torch.addcmul(g, u, torch.linalg.vecdot(dz, g)[:, None], out=d)  # g − u (v·g)

    @staticmethod
    def _searched_update(
        p: Tensor, dz: Tensor, u: Tensor, vg: Any, dz2: Any, t: Tensor, d: Tensor
    ) -> Tensor:
        """The update after a step of length ``t`` (B,): writes ``u``, and the next step into
        ``d``, which it returns.

        With ``Δz = t·d`` and ``H g = −d``: ``H Δg = p + Δz/t``, ``vᵀΔg = vᵀg_new + ‖Δz‖²/t``.
        """
        vg, dz2 = torch.as_tensor(vg), torch.as_tensor(dz2)
        den = vg + dz2 / t
        ok = (den.abs() > _SKIP * dz2 / t) & den.isfinite()
        inv = torch.where(ok, den.reciprocal(), 0.0)[:, None]
        # u = (Δz − H Δg) / vᵀΔg = ((1 − 1/t) Δz − p) / vᵀΔg
        torch.mul(dz, ((1 - 1 / t)[:, None] * inv), out=u).addcmul_(p, inv, value=-1)
        return torch.addcmul(p, u, vg[:, None], out=d).neg_()  # d = −(p + u (v·g_new))


def _offer(monitor: Monitor, w: Tensor, n: int) -> None:
    """Copy the ``n`` pairs in use out of the buffer (a workspace's, reused by the next solve)
    into ``monitor.inverse``, when the caller asked for the estimate (SHINE)."""
    if monitor.keep_inverse:
        keep = torch.contiguous_format  # a copy even where the slice happens to be contiguous
        u = w[:, 2 : 2 + 2 * n : 2].clone(memory_format=keep)
        v = w[:, 3 : 3 + 2 * n : 2].clone(memory_format=keep)
        monitor.inverse = LowRankInverse(u, v)


class _HostRecord:
    """The host kernels of a full step: the record (``g``, ``Δz``, their norms into the
    monitor's and their dot products with the first `pairs` pairs into the secant's), then
    the update (pair ``n`` and the next iterate, from the secant's weights) or the restart."""

    def __init__(self, monitor: Monitor, w: Tensor, secant: _Secant) -> None:
        # The rows as the kernels take them: (rows, B, D).
        self.w = w.transpose(0, 1).numpy()
        self.norms, self.prods = monitor.norms.numpy(), secant.prods_np
        self.coef, self.factors = secant.coef_np, secant.factors_np
        self.pairs = 0
        m = (w.shape[1] - 2) // 2  # the update reads the n pairs in use, padded to m
        self.u, self.v = self.w[2::2], self.w[3::2]
        self.weights = np.empty((w.shape[0], 2, m), dtype=self.w.dtype)  # the update's scratch
        self.rows = [
            (tuple(2 + 2 * i if i < n else 0 for i in range(m)),
             tuple(3 + 2 * i if i < n else 1 for i in range(m)))
            for n in range(m)
        ]  # fmt: skip

    def __call__(self, z: Tensor, z_new: Tensor, fz: Tensor) -> None:
        n = self.pairs
        host_kernels.broyden_record(*views(z, z_new, fz), self.w, n, self.norms, self.prods[n])

    def restart(self, z: Tensor, g_prev: Tensor, z_next: Tensor) -> None:
        """The restart's pair and ``z_next`` (see `host_kernels.broyden_restart`)."""
        z_np, g_prev_np, z_next_np = views(z, g_prev, z_next)
        host_kernels.broyden_restart(z_np, self.w, g_prev_np, _SKIP, z_next_np)

    def update(self, z: Tensor, n: int, z_next: Tensor) -> None:
        """Pair ``n`` into its rows and ``z_next`` (see `host_kernels.broyden_update`)."""
        z_np, z_next_np = views(z, z_next)
        u_rows, v_rows = self.rows[n]
        host_kernels.broyden_update(
            z_np, self.w, self.coef, n, self.factors, z_next_np, self.u[n], self.v[n],
            u_rows, v_rows, self.weights,
        )  # fmt: skip


class _Secant:
    """From the dot products ``prods[n]`` (B, 2, 2 + 2n) of ``g_new`` and ``Δz`` with the
    buffer's rows: the pairs' weights in ``p`` and ``v`` (into ``coef``), ``v·g_new`` and the
    factors of a full-step update. A compiled loop on the host, torch ops on a device.

    ``v·g_new = −Δz·g_new + Σ (u_i·Δz)(v_i·g_new)`` needs no pass over ``v``.
    """

    def __init__(self, z0: Tensor, coef: Tensor, m: int, host: bool) -> None:
        batch = z0.shape[0]
        self.prods = [z0.new_empty(batch, 2, 2 + 2 * n) for n in range(m + 1)]
        self.vg = z0.new_empty(batch)
        # −1/vᵀΔg and −‖Δz‖²/vᵀΔg as (B, 1) columns: (0, −1) for a skipped update.
        self.factors = z0.new_empty(2, batch, 1)
        self.cols = self.factors.unbind(0)  # torch views, made once
        self.coef, self.host = coef, host
        if host:  # NumPy views for the kernel
            self.prods_np = [x.numpy() for x in self.prods]
            self.coef_np, self.vg_np = coef.numpy(), self.vg.numpy()
            self.factors_np = self.factors.numpy()
        else:
            self.zero, self.minus_one = z0.new_tensor([0.0, -1.0]).unbind(0)

    def __call__(self, n: int) -> tuple[Tensor, Tensor]:
        if self.host:
            host_kernels.broyden_secant(
                self.prods_np[n], self.coef_np, n, _SKIP, self.vg_np, self.factors_np
            )
            return self.cols
        prods, coef = self.prods[n], self.coef
        v_g = prods[:, 0, 3 : 3 + 2 * n : 2]  # v_i·g_new weighs u_i in p
        u_dz = prods[:, 1, 2 : 2 + 2 * n : 2]  # u_i·Δz weighs v_i in v
        coef[:, 0, 2 : 2 + 2 * n : 2] = v_g
        coef[:, 1, 3 : 3 + 2 * n : 2] = u_dz
        torch.sub((v_g * u_dz).sum(1), prods[:, 1, 0], out=self.vg)
        dz2 = prods[:, 1, 1:2]
        den = self.vg[:, None] + dz2
        ok = (den.abs() > _SKIP * dz2) & den.isfinite()  # false for NaN and a zero step
        neg_inv, neg_factor = self.cols
        torch.where(ok, -1 / den, self.zero, out=neg_inv)
        torch.where(ok, dz2 * neg_inv, self.minus_one, out=neg_factor)
        return self.cols
