"""Exact implicit differentiation: the backward solves ``g = Jᵀ g + v`` with a root solver.

``J = ∂f/∂z`` at ``z*`` and ``v`` is the incoming gradient. The solve runs with any registered
solver (``gmres`` suits this affine system best), starting from zero, with its own iteration
cap and tolerance, and each product ``Jᵀ g`` is one vector-Jacobian product through a single
application of ``f`` kept from the forward. Its statistics land in ``stats.backward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from deqbench.gradients.base import GradContext, GradientEstimator
from deqbench.plugins import get_solver
from deqbench.solvers.base import STOP_MODES, Fn, Solver
from deqbench.solvers.inverse import held_tensors


class _ImplicitBackward(torch.autograd.Function):
    """Identity in the forward; in the backward, replaces ``v`` by the solver's ``g``.

    The Function sits on top of ``f(z*)`` and takes its VJPs with ``autograd.grad`` on that
    subgraph, which lies below it, so nothing re-enters: no hook to remove, and every
    backward call (``retain_graph=True``) solves again.
    """

    @staticmethod
    def forward(ctx: Any, fz: Tensor, solve_adjoint: Any, *held: Tensor) -> Tensor:
        ctx.solve_adjoint = solve_adjoint
        ctx.save_for_backward(*held)  # what the backward holds besides: memory meters see it
        return fz.view_as(fz)

    @staticmethod
    @once_differentiable  # the solve is not differentiable: double backward must fail loudly
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return (ctx.solve_adjoint(grad), None, *(None for _ in ctx.saved_tensors))


@dataclass(kw_only=True)
class IFT(GradientEstimator):
    """Implicit-function-theorem gradient.

    ``solver`` is a registered name (built with ``solver_options``) or a `Solver`; it,
    ``max_iter``, ``tol`` and ``stop_mode`` override the DEQ layer's ``b_*`` settings when set.
    A solve that does not converge still returns its best iterate (never the zero start);
    ``stats.backward`` then says so in its status and message.
    """

    solver: str | Solver | None = None
    solver_options: dict[str, Any] = field(default_factory=dict)
    max_iter: int | None = None
    tol: float | None = None
    stop_mode: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.solver, str):
            self.solver = get_solver(self.solver, **self.solver_options)
        elif self.solver_options:
            raise ValueError("solver_options apply only when solver is given by name")
        if self.solver is not None and not isinstance(self.solver, Solver):
            raise TypeError(f"solver must be a registered name or a Solver, got {self.solver!r}")
        if self.stop_mode is not None and self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be 'abs' or 'rel', got {self.stop_mode!r}")

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        if z_star is None:
            raise ValueError("ift needs the equilibrium z*")
        z = z_star.detach().requires_grad_()
        with torch.enable_grad():
            fz = f(z)
        assert self.solver is None or isinstance(self.solver, Solver)
        settings = {"max_iter": self.max_iter, "tol": self.tol, "stop_mode": self.stop_mode}

        def solve_adjoint(v: Tensor) -> Tensor:
            def adjoint_map(g: Tensor) -> Tensor:  # g ↦ Jᵀ g + v
                (vjp,) = torch.autograd.grad(fz, z, g, retain_graph=True, allow_unused=True)
                return v if vjp is None else vjp + v

            # Unset: the layer's b_* settings and b_solver (none: fixed-point, MDEQ's default).
            start = self.warm_start(v, ctx)
            return ctx.solve_backward(adjoint_map, start, solver=self.solver, **settings).z

        held = held_tensors(ctx.inverse) if self.needs_inverse else []
        return _ImplicitBackward.apply(fz, solve_adjoint, *held)

    def warm_start(self, v: Tensor, ctx: GradContext) -> Tensor:
        """Where the backward solve starts, for incoming gradient ``v``: zero."""
        return torch.zeros_like(v)
