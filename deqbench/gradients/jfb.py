"""Jacobian-free backprop: the incoming gradient passes through one application of ``f``.

It drops the ``(I − Jᵀ)⁻¹`` factor of the implicit gradient, i.e. treats ``J`` as zero; the
backward costs one VJP and solves nothing (Fung et al., 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from deqbench.gradients.base import GradContext, GradientEstimator
from deqbench.solvers.base import Fn


@dataclass(kw_only=True)
class JFB(GradientEstimator):
    """``f(z*)`` with ``z*`` constant: gradients reach the parameters and the injection only."""

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        if z_star is None:
            raise ValueError("jfb needs the equilibrium z*")
        return f(z_star.detach())
