"""Naive fixed-point iteration ``z ← z + β (f(z) − z)``, with optional damping ``β``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deqbench.solvers.base import Fn, Monitor, Solver


@dataclass(kw_only=True)
class FixedPoint(Solver):
    """Picard iteration; ``beta < 1`` damps each step (helps oscillating maps)."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")

    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        z = z0
        while True:
            fz = f(z)
            if monitor.observe(z, fz):  # no need to form f(z) − z: the monitor takes norms
                return
            step = fz
            if self.beta != 1:
                step = torch.lerp(z, fz, self.beta, out=monitor.next_iterate(z))
            z = monitor.hold_diverged(step, z)  # diverged samples stay put
