"""What a solve returns: the per-sample result record and its status codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from deqbench.solvers.inverse import InverseJacobian

_EPS = 1e-30  # floors ‖f(z)‖ in the relative residual; far below any float32 norm


class Status(str, enum.Enum):
    """How a solve ended, for one sample or (the worst over samples) for the batch."""

    CONVERGED = "converged"
    MAX_ITER = "max_iter"
    DIVERGED = "diverged"

    @classmethod
    def from_code(cls, code: int) -> Status:
        return _BY_CODE[int(code)]


_BY_CODE = {0: Status.CONVERGED, 1: Status.MAX_ITER, 2: Status.DIVERGED}


@dataclass(frozen=True, eq=False)
class SolverResult:
    """What a solve returns. Traces are ``(T, B)``: row ``k`` is the residual of iterate ``k``."""

    z: Tensor  #: (B, D) the lowest-residual iterate of each sample
    nstep: Tensor  #: (B,) iterations each sample ran before it stopped
    best_step: Tensor  #: (B,) the iteration whose iterate is returned
    nfe: int  #: calls of f (each over the whole batch)
    abs_trace: Tensor  #: (T, B) ‖f(z_k) − z_k‖
    rel_trace: Tensor  #: (T, B) ‖f(z_k) − z_k‖ / ‖f(z_k)‖
    sample_status: Tensor  #: (B,) int8: 0 converged, 1 max_iter, 2 diverged
    stop_mode: str
    tol: float
    #: the solver's inverse-Jacobian estimate, when it was asked to keep one and offers one
    inverse: InverseJacobian | None = None

    @property
    def abs_residual(self) -> Tensor:
        """(B,) absolute residual of the returned iterate."""
        return self.abs_trace.gather(0, self.best_step[None]).squeeze(0)

    @property
    def rel_residual(self) -> Tensor:
        """(B,) relative residual of the returned iterate."""
        return self.rel_trace.gather(0, self.best_step[None]).squeeze(0)

    @property
    def converged(self) -> Tensor:
        """(B,) bool: which samples reached the tolerance."""
        return self.sample_status == 0

    @property
    def status(self) -> Status:
        """The batch's status: diverged if any sample diverged, converged if all converged."""
        return Status.from_code(int(self.sample_status.max()))

    @property
    def message(self) -> str:
        """One line saying how the solve ended."""
        n = self.sample_status.numel()
        residual = self.rel_residual if self.stop_mode == "rel" else self.abs_residual
        worst = float(residual.max()) if n else 0.0
        ok = int(self.converged.sum())
        if self.status is Status.CONVERGED:
            return f"all {n} samples reached {self.stop_mode} tol {self.tol:g} (worst {worst:.2e})"
        bad = int((self.sample_status == 2).sum())
        tail = f"; {bad} diverged" if bad else ""
        return (
            f"{ok}/{n} samples reached {self.stop_mode} tol {self.tol:g} within "
            f"{self.abs_trace.shape[0]} evaluations{tail} (worst {self.stop_mode} residual "
            f"{worst:.2e})"
        )


def residual_norms(z: Tensor, fz: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) absolute ‖f(z) − z‖ and relative ‖f(z) − z‖ / ‖f(z)‖ residuals, as `Monitor` records
    them (it computes the same in place, in its own buffers)."""
    abs_r = torch.linalg.vector_norm(fz - z, dim=1)
    return abs_r, abs_r / torch.linalg.vector_norm(fz, dim=1).clamp_min(_EPS)
