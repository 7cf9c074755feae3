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

import torch
from torch import Tensor

from deqbench.solvers.base import Fn, Monitor, Solver


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
        batch, dim = z0.shape
        m = min(self.m, monitor.budget)  # more slots than evaluations would never be used
        # Ring buffers of images and residuals: slot k % m holds evaluation k.
        fs = z0.new_zeros(batch, m, dim)
        gs = z0.new_zeros(batch, m, dim)
        eye = torch.eye(m, dtype=z0.dtype, device=z0.device)
        # The system matrix: the Gram matrix of the slots in each sample's history with the
        # ridge on its diagonal, (1 + λ)‖g_i‖²; rows and columns of the other slots are the
        # identity's, and with a zero right-hand side there their weights are exactly zero.
        gram = eye.expand(batch, m, m).clone()
        valid = z0.new_zeros(batch, m)  # 1 for slots in the history: the right-hand side
        ridge = (1 + self.lam * eye).unbind(0)  # scales the diagonal entry of a new row
        zero, inf = z0.new_tensor([0.0, float("inf")]).unbind(0)
        # Per-slot views, made once: on small states indexing costs as much as arithmetic.
        f_slot, g_slot = fs.unbind(1), gs.unbind(1)
        rows, cols, valid_slot = gram.unbind(1), gram.unbind(2), valid.unbind(1)
        diag_slot = gram.diagonal(dim1=1, dim2=2).unbind(1)
        gs_t, rhs = gs.transpose(1, 2), valid.unsqueeze(2)
        cpu = z0.device.type == "cpu"
        z = z0
        for k in count():
            s = k % m
            f_s, g_s = f_slot[s], g_slot[s]
            f_s.copy_(f(z))
            torch.sub(f_s, z, out=g_s)
            if monitor.observe(z, f_s, g_s):
                return
            # Only row and column s change: m dot products, not m².
            row = torch.bmm(g_s.unsqueeze(1), gs_t).squeeze(1).mul_(ridge[s])
            if self.restart:  # samples whose residual grew keep only the newest slot
                grew = row[:, s] > diag_slot[(k - 1) % m]
                if not cpu or bool(grew.any()):  # reading the flag is free on the CPU only
                    valid.masked_fill_(grew.unsqueeze(1), 0)
                    torch.where(grew[:, None, None], eye, gram, out=gram)
            valid_slot[s].fill_(1)
            row.mul_(valid)
            rows[s].copy_(row)
            cols[s].copy_(row)
            a = torch.linalg.solve_ex(gram, rhs)[0]
            total = a.sum(1, keepdim=True)
            # 1ᵀH⁻¹1 > 0 for a positive definite H; anything else means the solve failed.
            ok = (total > zero) & (total < inf)
            alpha = torch.where(ok, a / total, eye[s].unsqueeze(1)).transpose(1, 2)
            step = torch.bmm(alpha, fs).squeeze(1)
            if self.beta != 1:
                step.sub_(torch.bmm(alpha, gs).squeeze(1), alpha=1 - self.beta)
            z = monitor.where_active(step, z)
