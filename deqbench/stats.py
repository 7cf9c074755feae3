"""Statistics of one DEQ call: its forward solve, its backward solve and its Jacobian penalty.

Scalars are read lazily from the solver's result, so recording them costs no device sync; the
sync happens when the runner reads a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from deqbench.solvers.base import SolverResult, Status


@dataclass(frozen=True, eq=False)
class SolveStats:
    """One solve (forward or backward), summarised over the batch by its worst sample."""

    result: SolverResult  #: the full record: per-sample residual traces, best iterates

    @property
    def nfe(self) -> int:
        """Calls of the solver's function (each over the whole batch)."""
        return self.result.nfe

    @property
    def nstep(self) -> int:
        """Steps of the slowest sample."""
        return int(self.result.nstep.max())

    @property
    def abs_residual(self) -> float:
        """Worst absolute residual of the returned iterates."""
        return float(self.result.abs_residual.max())

    @property
    def rel_residual(self) -> float:
        """Worst relative residual of the returned iterates."""
        return float(self.result.rel_residual.max())

    @property
    def status(self) -> Status:
        return self.result.status

    @property
    def message(self) -> str:
        return self.result.message

    def as_dict(self, prefix: str) -> dict[str, Any]:
        """Flat columns, e.g. ``f_nfe``, ``f_rel_residual``, ``f_status`` for ``prefix="f_"``."""
        return {
            f"{prefix}nfe": self.nfe,
            f"{prefix}nstep": self.nstep,
            f"{prefix}abs_residual": self.abs_residual,
            f"{prefix}rel_residual": self.rel_residual,
            f"{prefix}status": self.status.value,
            f"{prefix}message": self.message,
        }


@dataclass(eq=False)
class DEQStats:
    """What one DEQ forward (and, once it runs, its backward) did.

    ``backward`` stays None for estimators that solve nothing in the backward (jfb, phantom,
    unrolled) and until the backward runs; a repeated backward overwrites it.
    ``jac_loss`` is the unweighted Jacobian penalty when this forward computed one.
    """

    forward: SolveStats | None = None
    backward: SolveStats | None = None
    jac_loss: Tensor | None = None

    def record_forward(self, result: SolverResult) -> None:
        self.forward = SolveStats(result)

    def record_backward(self, result: SolverResult) -> None:
        self.backward = SolveStats(result)

    def as_dict(self) -> dict[str, Any]:
        """Flat columns for a report row: ``f_*``, ``b_*`` (when present) and ``jac_loss``."""
        row: dict[str, Any] = {}
        for prefix, part in (("f_", self.forward), ("b_", self.backward)):
            if part is not None:
                row.update(part.as_dict(prefix))
        if self.jac_loss is not None:
            row["jac_loss"] = float(self.jac_loss.detach())
        return row
