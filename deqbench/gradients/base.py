"""The gradient-estimator interface and the context the DEQ layer hands to an estimator.

An estimator gets ``f`` on flat ``(B, D)`` states, differentiable with respect to the cell's
parameters and the injection, and the detached equilibrium ``z*``. It returns a tensor whose
value is ``f(z*)`` (or, for the unrolled and phantom estimators, their last iterate, which
equals it at convergence) and whose backward pass is the estimator's gradient.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from deqbench.errors import DeqbenchError
from deqbench.settings import layer_defaults
from deqbench.solvers.base import STOP_MODES, Fn, Solver, SolverResult
from deqbench.solvers.fixed_point import FixedPoint
from deqbench.solvers.inverse import InverseJacobian
from deqbench.stats import DEQStats

_D = layer_defaults()  # a bare layer's settings, declared once in `deqbench.settings.DEQSpec`


class ReentrantBackwardError(DeqbenchError, RuntimeError):
    """A backward solve started while one of the same DEQ call was still running: the
    adjoint map's vector-Jacobian products ran back through the tensor whose backward hook
    started the solve, so the hook re-entered itself (and would recurse without end)."""


@dataclass(eq=False)
class GradContext:
    """What the DEQ layer tells an estimator besides ``f`` and ``z*``.

    The ``b_*`` settings are the layer's backward defaults (``b_solver`` None: fixed-point);
    an estimator's own options may override them. The ``f_*`` settings and ``z0`` serve
    estimators that replace the forward solve (``unrolls_forward``). Statistics go to
    ``stats``. The settings are the layer's (`deqbench.DEQSettings`), resolved: the defaults
    are a bare layer's, and ``b_stop_mode`` is never None. An estimator that solves a
    backward system solves it with `solve_backward`, which records its statistics.
    """

    z0: Tensor  #: (B, D) the detached starting state of the forward solve
    f_max_iter: int = _D["f_max_iter"]
    f_tol: float = _D["f_tol"]
    f_stop_mode: str = _D["stop_mode"]
    b_max_iter: int = _D["b_max_iter"]
    b_tol: float = _D["b_tol"]
    b_stop_mode: str = _D["stop_mode"]  # the layer's None (as the forward's) resolved
    b_solver: Solver | None = None
    stats: DEQStats = field(default_factory=DEQStats)
    #: the forward solver's inverse-Jacobian estimate, for estimators with ``needs_inverse``
    inverse: InverseJacobian | None = None
    _solving: bool = field(default=False, init=False, repr=False)  # inside `solve_backward`

    def __post_init__(self) -> None:
        for name in ("f_stop_mode", "b_stop_mode"):
            if getattr(self, name) not in STOP_MODES:
                raise ValueError(f"{name} must be 'abs' or 'rel', got {getattr(self, name)!r}")

    def solve_backward(
        self,
        adjoint_map: Fn,
        start: Tensor,
        *,
        solver: Solver | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        stop_mode: str | None = None,
    ) -> SolverResult:
        """Solve the backward fixed point ``g = adjoint_map(g)`` from ``start`` and record it
        as ``stats.backward`` (a report's ``b_*`` columns). Unset settings are the layer's
        ``b_*``; ``solver`` None: ``b_solver``, else fixed-point iteration.

        Raises `ReentrantBackwardError` when called while a solve of this context runs.
        """
        if self._solving:
            raise ReentrantBackwardError(
                "a backward solve re-entered itself: the adjoint map's vector-Jacobian "
                "products ran through the tensor whose backward hook started the solve; take "
                "them on f(z) and put the hook on a view of it, out = fz.view_as(fz) (see "
                "docs/writing-a-gradient-plugin.md)"
            )
        if solver is None:
            solver = self.b_solver if self.b_solver is not None else FixedPoint()
        self._solving = True
        try:
            result = solver(
                adjoint_map,
                start,
                max_iter=self.b_max_iter if max_iter is None else max_iter,
                tol=self.b_tol if tol is None else tol,
                stop_mode=self.b_stop_mode if stop_mode is None else stop_mode,
            )
        finally:
            self._solving = False
        self.stats.record_backward(result)
        return result


class GradientEstimator(abc.ABC):
    """Attaches a backward pass to the equilibrium. Options are constructor arguments.

    An estimator with ``unrolls_forward = True`` computes the forward itself from ``ctx.z0``:
    the layer then skips its forward solve and passes ``z_star=None``. One whose
    ``needs_inverse`` is true (a class attribute, or a property of its options) reads the
    forward solver's inverse-Jacobian estimate from ``ctx.inverse``: the layer asks the
    solver to keep one, and refuses a solver that offers none (`check_pairing`).
    """

    unrolls_forward: ClassVar[bool] = False
    needs_inverse: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        """A ``(B, D)`` tensor equal to ``f(z*)`` whose backward is this estimator's gradient."""


def check_pairing(solver: Solver, gradient: GradientEstimator) -> None:
    """`ValueError` when ``gradient`` needs the forward solver's inverse-Jacobian estimate
    and ``solver`` offers none (SHINE with Anderson, say)."""
    if gradient.needs_inverse and not getattr(solver, "offers_inverse", False):
        raise ValueError(
            f"gradient {type(gradient).__name__} reuses the forward solver's inverse-Jacobian "
            f"estimate, and solver {type(solver).__name__} offers none; expected a solver "
            "that offers one (broyden)"
        )
