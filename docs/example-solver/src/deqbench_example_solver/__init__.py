"""An example deqbench plugin: fixed-point iteration with heavy-ball momentum.

``z ← z + beta·(f(z) − z) + mu·(z − z_previous)``. With ``mu = 0`` it is plain (damped)
fixed-point iteration; a little momentum speeds up slowly contracting maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import deqbench
from deqbench import Fn, Monitor, Solver


@dataclass(kw_only=True)
class Momentum(Solver):
    """Heavy-ball fixed-point iteration: step ``beta``, momentum ``mu``."""

    beta: float = 1.0
    mu: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()  # checks the options every solver has
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
        if not 0 <= self.mu < 1:
            raise ValueError(f"mu must be in [0, 1), got {self.mu}")

    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        # Scratch of our own, reused from solve to solve: the residual and the velocity
        # z − z_previous. The velocity is a copy, never a reference to the previous iterate:
        # that lives in a next_iterate buffer, which the step after next overwrites.
        g = monitor.buffer("residual", *z0.shape)
        velocity = monitor.buffer("velocity", *z0.shape).zero_()
        z = z0
        while True:
            fz = f(z)
            torch.sub(fz, z, out=g)
            # One observe per call of f, at the point f was called at: the monitor keeps the
            # traces, the best iterate, each sample's status, and says when to stop.
            if monitor.observe(z, fz, g):
                return
            step = monitor.next_iterate(z)  # a preallocated buffer, never z itself
            torch.add(z, g, alpha=self.beta, out=step).add_(velocity, alpha=self.mu)
            torch.sub(step, z, out=velocity)
            # Diverged samples stay where they are (the monitor ignores stopped ones).
            z = monitor.hold_diverged(step, z)


@deqbench.hookimpl
def register_solvers(register):
    register("momentum", Momentum, description="fixed-point iteration with heavy-ball momentum")
