"""SHINE: the backward applies the forward solver's inverse-Jacobian estimate.

Ramzi et al. (ICLR 2022), "SHINE: SHaring the INverse Estimate from the forward pass for
bi-level optimization and implicit models". The implicit backward's adjoint
``(I − Jᵀ)⁻¹ v`` is replaced by the transposed quasi-Newton estimate the forward's Broyden
solve built anyway (`deqbench.solvers.inverse`), so the backward costs one VJP and solves
nothing. The estimate holds the solver's rank-1 pairs until the backward: they are saved with
the graph, where memory meters see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from deqbench.gradients.base import GradContext, GradientEstimator
from deqbench.solvers.base import Fn
from deqbench.solvers.inverse import InverseJacobian, held_tensors


class _SharedInverse(torch.autograd.Function):
    """Identity in the forward; the backward replaces ``v`` by ``inverse.adjoint(v)``. The
    estimate's tensors ride in ``save_for_backward``, so they count as the graph's memory."""

    @staticmethod
    def forward(ctx: Any, fz: Tensor, inverse: InverseJacobian, *held: Tensor) -> Tensor:
        ctx.inverse = inverse
        ctx.save_for_backward(*held)
        return fz.view_as(fz)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return (ctx.inverse.adjoint(grad), None, *(None for _ in ctx.saved_tensors))


def shared_inverse(fz: Tensor, inverse: InverseJacobian) -> Tensor:
    """``fz`` whose backward applies ``inverse.adjoint`` to the incoming gradient."""
    return _SharedInverse.apply(fz, inverse, *held_tensors(inverse))


@dataclass(kw_only=True)
class SHINE(GradientEstimator):
    """``f(z*)`` whose backward is ``(I − Jᵀ)⁻¹ v`` as the forward solver estimated it.

    Needs a forward solver that offers an inverse-Jacobian estimate (``offers_inverse``:
    Broyden); the layer refuses any other. With Broyden's ``m`` below its steps, the estimate
    holds only the pairs since its last restart: set ``m`` to the forward's cap for SHINE's.
    """

    needs_inverse: ClassVar[bool] = True

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        if z_star is None:
            raise ValueError("shine needs the equilibrium z*")
        if ctx.inverse is None:
            raise ValueError(
                "shine needs the forward solver's inverse-Jacobian estimate (GradContext.inverse)"
            )
        return shared_inverse(f(z_star.detach()), ctx.inverse)
