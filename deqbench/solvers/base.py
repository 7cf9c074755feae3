"""The root-solver interface.

A solver finds ``z = f(z)`` for ``f`` on flat ``(B, D)`` tensors. Norms, stopping, the best
iterate and the status are all per sample (`Monitor` keeps them); divergence is reported in the
result (`SolverResult`), never raised.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from deqbench.solvers.inverse import InverseJacobian
from deqbench.solvers.monitor import STOP_MODES, Fn, Monitor
from deqbench.solvers.result import SolverResult, Status, residual_norms
from deqbench.solvers.workspace import Workspace

__all__ = [
    "STOP_MODES",
    "Fn",
    "InverseJacobian",
    "Monitor",
    "Solver",
    "SolverResult",
    "Status",
    "Workspace",
    "check_call",
    "residual_norms",
]


def check_call(z0: Tensor, max_iter: int, tol: float, stop_mode: str) -> None:
    """Raise ValueError for arguments no solve can honour (shared by solvers that skip
    `Monitor`, such as adapters of other libraries)."""
    if z0.dim() != 2:
        raise ValueError(f"solvers take a flat (B, D) state, got shape {tuple(z0.shape)}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be 'abs' or 'rel', got {stop_mode!r}")


@dataclass(kw_only=True)
class Solver(abc.ABC):
    """A root solver. Options are constructor fields; the solve is ``solver(f, z0, ...)``.

    ``divergence``: a sample whose absolute residual grows this many times above its lowest so
    far, or turns non-finite, is stopped and marked diverged.

    ``affine_only``: a class that sets it True solves only affine maps ``f(z) = Az + b`` (a
    Krylov method, say); the conformance kit then skips its checks on nonlinear maps.

    ``offers_inverse``: a class that sets it True sets ``monitor.inverse`` (an
    `InverseJacobian`) before ``solve`` returns whenever ``monitor.keep_inverse`` is set, so
    that a call with ``keep_inverse=True`` returns it in ``SolverResult.inverse`` (SHINE).
    """

    affine_only: ClassVar[bool] = False
    offers_inverse: ClassVar[bool] = False
    divergence: float = 1e4

    def __post_init__(self) -> None:
        if not self.divergence > 1:
            raise ValueError(f"divergence must be > 1, got {self.divergence}")

    def __call__(
        self,
        f: Fn,
        z0: Tensor,
        *,
        max_iter: int = 50,
        tol: float = 1e-4,
        stop_mode: str = "rel",
        keep_inverse: bool = False,
    ) -> SolverResult:
        """Solve ``z = f(z)`` from ``z0`` (``(B, D)``); at most ``max_iter`` calls of ``f``.
        ``keep_inverse``: return the solver's inverse-Jacobian estimate too (``offers_inverse``
        solvers only; `ValueError` for others)."""
        check_call(z0, max_iter, tol, stop_mode)
        if keep_inverse and not self.offers_inverse:
            raise ValueError(f"{type(self).__name__} offers no inverse-Jacobian estimate")
        with torch.no_grad(), self.workspace.lease(z0) as scratch:
            monitor = Monitor(
                z0, max_iter, tol, stop_mode, self.divergence, scratch=scratch,
                keep_inverse=keep_inverse,
            )  # fmt: skip
            self.solve(f, z0, monitor)
            if keep_inverse and monitor.inverse is None:
                raise ValueError(
                    f"{type(self).__name__} declares offers_inverse but set no monitor.inverse"
                )
            return monitor.result()

    @property
    def workspace(self) -> Workspace:
        """The buffers this solver keeps between its solves on the CPU (`Monitor.buffer`)."""
        ws = self.__dict__.get("_workspace")
        if ws is None:  # made on first use: not a field, so never compared, shown or replaced
            ws = self.__dict__["_workspace"] = Workspace()
        return ws

    def __getstate__(self) -> dict:
        # Copies and pickles (shallow ones too) start with a workspace of their own.
        return {k: v for k, v in self.__dict__.items() if k != "_workspace"}

    @abc.abstractmethod
    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        """Iterate, calling ``monitor.observe`` once per evaluation of ``f`` at an iterate.

        Stop when ``observe`` says all samples are done or ``monitor.budget`` evaluations
        are spent. Pass each step through ``monitor.hold_diverged`` so that diverged samples
        stay put (stopped samples are ignored by the monitor from then on). Take large
        scratch buffers (histories) from ``monitor.buffer``: on the CPU they are then reused
        from one solve to the next.
        """
