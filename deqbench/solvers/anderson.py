"""Anderson acceleration (type II) with a scale-free ridge and per-sample restarts.

Each step mixes the images ``f(x_i)`` in a sample's history (the last ``m`` evaluations at
most) with weights ``α`` that minimise ``‖Σ α_i g_i‖`` (``g_i = f(x_i) − x_i``) subject to
``Σ α_i = 1``. With the Gram matrix ``H = GGᵀ`` the minimiser is ``α ∝ (H + R)⁻¹ 1``: a small
``(m, m)`` solve per sample.

The ridge ``R = λ·diag(H)`` is relative to each residual's own size, so the weights are the same
for the problem at any scale (``f_s(z) = s·f(z/s)`` takes the same steps). A fixed ``λ·I``, as in
the reference code, swamps ``H`` once residuals are small and turns the mix into a plain average,
which stalls the solve exactly when it should be fastest.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count

import numpy as np
import torch
from torch import Tensor

from deqbench.solvers import host_kernels
from deqbench.solvers.base import Fn, Monitor, Solver
from deqbench.solvers.host_kernels import views


@dataclass(kw_only=True)
class Anderson(Solver):
    """Anderson acceleration with window ``m``, mixing ``beta`` and relative ridge ``lam``.

    ``x_new = Σ α_i f(x_i) − (1 − beta) Σ α_i g_i``; ``beta = 1`` is undamped.
    ``restart``: a sample whose residual grew at its last step forgets its history and takes a
    plain step. Without it, on ReLU/GroupNorm cells a few samples stall near 1e-3 for hundreds
    of steps while fixed-point iteration converges; on smooth maps it rarely fires.
    A sample whose small system gives unusable weights (singular, overflowed) also takes a plain
    step: the solve never raises and never makes a NaN from finite values.
    """

    m: int = 5
    beta: float = 1.0
    lam: float = 1e-4
    restart: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m < 1:
            raise ValueError(f"m must be >= 1, got {self.m}")
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        m = min(self.m, monitor.budget)  # more slots than evaluations would never be used
        if monitor.host and host_kernels.handles(z0.dtype):
            self._solve_host(f, z0, monitor, m)
        else:
            self._solve_device(f, z0, monitor, m)

    def _solve_host(self, f: Fn, z0: Tensor, monitor: Monitor, m: int) -> None:
        """Compiled kernels on NumPy views: a record pass, the weights, a mix pass per step.

        The histories are slot-major, (m, B, D), so each slot is one array, and the mix
        reads a tuple of all m of them in one pass (`host_kernels.anderson_mix`).
        """
        batch, dim = z0.shape
        fs, gs = monitor.buffer("history", 2, m, batch, dim).numpy()  # slot k % m: evaluation k
        f_slots, g_slots = list(fs), list(gs)
        slots = [(_filled(f_slots, n), _filled(g_slots, n)) for n in range(m + 1)]  # mix reads
        weights = _HostWeights(batch, m, fs.dtype, self.lam, self.restart)
        norms = monitor.norms.numpy()
        damping = fs.dtype.type(1 - self.beta)  # in the state's dtype: no promotion
        z = z0
        for k in count():
            s, n = k % m, min(k + 1, m)
            z_np, fz_np = views(z, f(z))
            host_kernels.anderson_record(z_np, fz_np, fs, gs, s, n, norms, weights.dots[n])
            if monitor.observe_norms(z):
                return
            alpha = weights(k, s, n)
            step = monitor.next_iterate(z)
            host_kernels.anderson_mix(step.numpy(), alpha, *slots[n], damping)
            z = monitor.hold_diverged(step, z)

    def _solve_device(self, f: Fn, z0: Tensor, monitor: Monitor, m: int) -> None:
        """Batched torch ops, with no host sync: the images and residuals are copied into
        ring buffers so that the mix is one batched product."""
        batch, dim = z0.shape
        # Slot k % m holds evaluation k. Never zeroed: only the first n = min(k + 1, m) slots
        # are read (views made once; on small states indexing every step costs as much as
        # arithmetic).
        fs = monitor.buffer("images", batch, m, dim)
        gs = monitor.buffer("residuals", batch, m, dim)
        f_slot, g_slot = fs.unbind(1), gs.unbind(1)
        fs_used = [fs[:, :n] for n in range(m + 1)]
        gs_used = [gs[:, :n] for n in range(m + 1)]
        gs_used_t = [g.transpose(1, 2) for g in gs_used]
        weights = _DeviceWeights(z0, m, self.lam, self.restart)
        z = z0
        for k in count():
            s, n = k % m, min(k + 1, m)
            f_s, g_s = f_slot[s], g_slot[s]
            f_s.copy_(f(z))
            torch.sub(f_s, z, out=g_s)
            if monitor.observe(z, f_s, g_s):
                return
            torch.bmm(g_s.unsqueeze(1), gs_used_t[n], out=weights.dots[n])  # g_s · g_i
            alpha = weights(k, s, n)  # (B, 1, n)
            step = monitor.next_iterate(z)
            if n == 1:  # one slot: its weight is 1 (and a (1 × 1)·(1 × D) product is slow)
                if self.beta == 1:
                    step.copy_(f_s)
                else:
                    torch.sub(f_s, g_s, alpha=1 - self.beta, out=step)
            else:
                torch.bmm(alpha, fs_used[n], out=step.unsqueeze(1))
                if self.beta != 1:
                    step.unsqueeze(1).baddbmm_(alpha, gs_used[n], alpha=self.beta - 1)
            z = monitor.hold_diverged(step, z)


def _filled(slots: list[np.ndarray], n: int) -> tuple[np.ndarray, ...]:
    """``slots`` with the first ``n`` filled, those not yet filled replaced by slot 0: the mix
    reads every slot, unused ones at weight 0, and uninitialised memory could hold a NaN
    (0 × NaN is NaN)."""
    return tuple(slots[:n] + slots[:1] * (len(slots) - n))


class _HostWeights:
    """The mixing weights on the host: one compiled loop over the batch
    (`host_kernels.anderson_weights`) on NumPy buffers, which are cheaper to make than
    tensors (that matters to solves of a few evaluations). The system is `_DeviceWeights`'s.
    """

    def __init__(self, batch: int, m: int, dtype: np.dtype, lam: float, restart: bool) -> None:
        self.gram = np.tile(np.eye(m, dtype=dtype), (batch, 1, 1))
        self.valid = np.zeros((batch, m, 1), dtype=dtype)
        # Per count n of slots in use the solver writes ``g_s · g_i`` into dots[n] (B, 1, n).
        self.dots = [np.empty((batch, 1, n), dtype=dtype) for n in range(m + 1)]
        # The weights of all m slots: the kernel writes the first n, and n only grows, so the
        # others stay 0.
        self.alpha = np.zeros((batch, 1, m), dtype=dtype)
        self.lam, self.restart = lam, restart

    def __call__(self, k: int, s: int, n: int) -> np.ndarray:
        """``α`` (B, 1, m) from this step's dot products in ``dots[n]``."""
        host_kernels.anderson_weights(
            self.dots[n], self.gram, self.valid, self.alpha, self.lam, k, s, n, self.restart
        )
        return self.alpha


class _DeviceWeights:
    """The mixing weights from the ``(m, m)`` system of each sample, updated one row a step,
    as batched torch ops with no host sync."""

    def __init__(self, z0: Tensor, m: int, lam: float, restart: bool) -> None:
        batch = z0.shape[0]
        # The small system in at least float32 (LAPACK has no half-precision solve).
        small = torch.promote_types(z0.dtype, torch.float32)
        self.eye = torch.eye(m, dtype=small, device=z0.device)
        # The system matrix: the Gram matrix of the slots in each sample's history with the
        # ridge on its diagonal, (1 + λ)‖g_i‖²; rows and columns of the other slots are the
        # identity's, and with a zero right-hand side there their weights are exactly zero.
        self.gram = self.eye.expand(batch, m, m).clone()
        self.valid = self.eye.new_zeros(batch, m, 1)  # 1 for slots in the history: the rhs
        self.ridge = 1 + lam * self.eye  # ridge[s] scales the new row's entry s
        self.restart = restart
        # Per count n of slots in use the solver writes ``g_s · g_i`` into dots[n] (B, 1, n),
        # and alpha[n] (B, 1, n) receives the weights.
        self.dots = [z0.new_empty(batch, 1, n) for n in range(m + 1)]
        self.alpha = [z0.new_empty(batch, 1, n) for n in range(m + 1)]

    def __call__(self, k: int, s: int, n: int) -> Tensor:
        """``α`` (B, 1, n) from this step's dot products in ``dots[n]``."""
        gram, valid, eye = self.gram, self.valid, self.eye
        row = self.dots[n][:, 0].to(gram.dtype) * self.ridge[s, :n]
        if self.restart and k:  # samples whose residual grew keep only the newest slot
            prev = (k - 1) % gram.shape[1]
            grew = (row[:, s] > gram[:, prev, prev])[:, None, None]
            valid.masked_fill_(grew, 0)
            torch.where(grew, eye, gram, out=gram)
        valid[:, s] = 1
        row *= valid[:, :n, 0]
        gram[:, s, :n] = row
        gram[:, :n, s] = row
        a = torch.linalg.solve_ex(gram, valid)[0][:, :n]
        total = a.sum(1, keepdim=True)
        # 1ᵀH⁻¹1 > 0 for a positive definite H; anything else means the solve failed.
        ok = (total > 0) & (total < float("inf"))
        return self.alpha[n].copy_(torch.where(ok, a / total, eye[:n, s, None]).transpose(1, 2))
