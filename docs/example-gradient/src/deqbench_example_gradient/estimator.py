"""The example's estimator (imported only when first used)."""

from dataclasses import dataclass

import torch
from torch import Tensor

from deqbench import Fn, GradContext, GradientEstimator


@dataclass(kw_only=True)
class DampedIFT(GradientEstimator):
    """The backward solves ``g = tau·Jᵀg + v`` instead of ``g = Jᵀg + v``: ``tau = 1`` is the
    exact implicit gradient, ``tau = 0`` the Jacobian-free one; in between, the backward
    system contracts faster, so its solve takes fewer evaluations."""

    tau: float = 0.8
    max_iter: int | None = None  # None: the layer's b_max_iter

    def __post_init__(self) -> None:
        if not 0 <= self.tau <= 1:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        if z_star is None:
            raise ValueError("damped-ift needs the equilibrium z*")
        z = z_star.detach().requires_grad_()
        with torch.enable_grad():
            fz = f(z)  # one application of f: the value f(z*), and the graph of every VJP
        out = fz.view_as(fz)  # the hook goes on this view, never on fz: see the guide

        def hook(v: Tensor) -> Tensor:
            def adjoint_map(g: Tensor) -> Tensor:  # g ↦ tau·Jᵀg + v
                (vjp,) = torch.autograd.grad(fz, z, g, retain_graph=True)
                return torch.add(v, vjp, alpha=self.tau)

            # The layer's b_* settings, and the solve recorded as stats.backward (b NFE).
            result = ctx.solve_backward(adjoint_map, torch.zeros_like(v), max_iter=self.max_iter)
            return result.z  # replaces v: autograd carries it on through f to the parameters

        out.register_hook(hook)
        return out
