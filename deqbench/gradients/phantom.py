"""Phantom gradient: backprop through ``k`` damped fixed-point steps from the equilibrium.

``z₀ = z*``, ``z_{i+1} = τ f(z_i) + (1 − τ) z_i``; the graph spans the ``k`` steps, so memory
grows with ``k`` and not with the forward solve (Geng et al., 2021). ``k = 1, τ = 1`` is JFB; a
large ``k`` with ``τ = 1`` tends to the implicit gradient on a contraction.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from deqbench.gradients.base import GradContext, GradientEstimator
from deqbench.solvers.base import Fn


@dataclass(kw_only=True)
class Phantom(GradientEstimator):
    """``k`` unrolled steps with damping ``tau`` in (0, 1]; the value is the last step's."""

    k: int = 5
    tau: float = 0.5

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        if z_star is None:
            raise ValueError("phantom needs the equilibrium z*")
        z = z_star.detach()
        for _ in range(self.k):
            z = f(z) if self.tau == 1 else self.tau * f(z) + (1 - self.tau) * z
        return z
