"""An example deqbench plugin: fixed-point iteration with heavy-ball momentum.

``z ← z + beta·(f(z) − z) + mu·(z − z_previous)``. With ``mu = 0`` it is plain (damped)
fixed-point iteration; a little momentum speeds up slowly contracting maps.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

import deqbench
from deqbench.solvers import Monitor, Solver
from deqbench.solvers.base import Fn


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
        z_prev = z = z0
        while True:
            fz = f(z)
            g = fz - z
            # One observe per call of f, at the point f was called at: the monitor keeps the
            # traces, the best iterate, each sample's status, and says when to stop.
            if monitor.observe(z, fz, g):
                return
            step = z + self.beta * g + self.mu * (z - z_prev)
            # Diverged samples stay where they are (the monitor ignores stopped ones).
            z_prev, z = z, monitor.hold_diverged(step, z)


@deqbench.hookimpl
def register_solvers(register):
    register("momentum", Momentum, description="fixed-point iteration with heavy-ball momentum")
