"""The root-solver interface, its result record, and the convergence monitor solvers share.

A solver finds ``z = f(z)`` for ``f`` on flat ``(B, D)`` tensors. Norms, stopping, the best
iterate and the status are all per sample. Divergence is reported in the result, never raised.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

Fn = Callable[[Tensor], Tensor]
STOP_MODES = ("abs", "rel")
_EPS = 1e-30  # guards ‖f(z)‖ = 0 in the relative residual; far below any float32 residual


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


@dataclass(kw_only=True)
class Solver(abc.ABC):
    """A root solver. Options are constructor fields; the solve is ``solver(f, z0, ...)``.

    ``divergence``: a sample whose absolute residual grows this many times above its lowest so
    far, or turns non-finite, is stopped and marked diverged.
    """

    divergence: float = 1e4

    def __post_init__(self) -> None:
        if not self.divergence > 1:
            raise ValueError(f"divergence must be > 1, got {self.divergence}")

    def __call__(
        self, f: Fn, z0: Tensor, *, max_iter: int = 50, tol: float = 1e-4, stop_mode: str = "rel"
    ) -> SolverResult:
        """Solve ``z = f(z)`` from ``z0`` (``(B, D)``); at most ``max_iter`` calls of ``f``."""
        if z0.dim() != 2:
            raise ValueError(f"solvers take a flat (B, D) state, got shape {tuple(z0.shape)}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be 'abs' or 'rel', got {stop_mode!r}")
        with torch.no_grad():
            monitor = Monitor(z0, max_iter, tol, stop_mode, self.divergence)
            self.solve(f, z0, monitor)
            return monitor.result()

    @abc.abstractmethod
    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        """Iterate, calling ``monitor.observe`` once per evaluation of ``f`` at an iterate.

        Stop when ``observe`` says all samples are done or ``monitor.budget`` evaluations
        are spent. Keep samples that are not ``monitor.active`` where they are.
        """


@dataclass(eq=False)
class Monitor:
    """Per-sample residuals, traces, best iterate and status, in preallocated buffers.

    ``observe(z, fz, g)`` with ``g = fz − z`` records one evaluation. Its answer to "all done?"
    is free on the CPU; on CUDA it reads a flag copied asynchronously at an earlier step, so the
    GPU never stalls (a solve may then run a step or two past the last sample's convergence).
    """

    z0: Tensor
    budget: int
    tol: float
    stop_mode: str
    divergence: float
    nfe: int = 0
    active: Tensor = field(init=False)

    def __post_init__(self) -> None:
        z0, batch = self.z0, self.z0.shape[0]
        real = z0.dtype if z0.dtype.is_floating_point else torch.float32
        self.abs_trace = z0.new_zeros(self.budget, batch, dtype=real)
        self.rel_trace = z0.new_zeros(self.budget, batch, dtype=real)
        self.best_z = z0.clone()
        self.best_r = z0.new_full((batch,), float("inf"), dtype=real)
        self.min_abs = z0.new_full((batch,), float("inf"), dtype=real)
        self.best_step = z0.new_zeros(batch, dtype=torch.long)
        self.nstep = z0.new_zeros(batch, dtype=torch.long)
        self.status = z0.new_ones(batch, dtype=torch.int8)  # max_iter until shown otherwise
        self.active = z0.new_ones(batch, dtype=torch.bool)
        self._flag = _DoneFlag(z0.device)

    def observe(self, z: Tensor, fz: Tensor, g: Tensor) -> bool:
        """Record iterate ``z`` with ``fz = f(z)``, ``g = fz − z``; True when the solve may stop."""
        k, active = self.nfe, self.active
        self.nfe += 1
        abs_r = torch.linalg.vector_norm(g, dim=1)
        rel_r = abs_r / (torch.linalg.vector_norm(fz, dim=1) + _EPS)
        r = rel_r if self.stop_mode == "rel" else abs_r
        # Samples that stopped keep their last residual in the trace.
        prev = k - 1 if k else 0
        torch.where(active, abs_r, self.abs_trace[prev], out=self.abs_trace[k])
        torch.where(active, rel_r, self.rel_trace[prev], out=self.rel_trace[k])

        if k:  # the start is never the answer once a step exists (a zero start = no gradient)
            better = active & ((r < self.best_r) | (k == 1))
            torch.where(better, r, self.best_r, out=self.best_r)
            torch.where(better[:, None], z, self.best_z, out=self.best_z)
            self.best_step.masked_fill_(better, k)
        torch.minimum(self.min_abs, abs_r, out=self.min_abs)

        converged = r <= self.tol
        diverged = ~torch.isfinite(abs_r) | (abs_r > self.divergence * self.min_abs)
        self.nstep.masked_fill_(active, k)
        self.status.masked_fill_(active & converged, 0)
        self.status.masked_fill_(active & diverged & ~converged, 2)
        active &= ~(converged | diverged)
        return self.nfe >= self.budget or self._flag.all_false(active)

    def result(self) -> SolverResult:
        n = max(self.nfe, 1)
        return SolverResult(
            z=self.best_z,
            nstep=self.nstep,
            best_step=self.best_step.clamp(max=n - 1),
            nfe=self.nfe,
            abs_trace=self.abs_trace[:n],
            rel_trace=self.rel_trace[:n],
            sample_status=self.status,
            stop_mode=self.stop_mode,
            tol=self.tol,
        )


class _DoneFlag:
    """Answers "is no sample active?" without a device sync on CUDA (one or two steps late)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.host = torch.zeros((), dtype=torch.bool, pin_memory=True)
            self.event = torch.cuda.Event()
            self.pending = False

    def all_false(self, active: Tensor) -> bool:
        if not self.cuda:
            return not bool(active.any())
        if self.pending and self.event.query():
            self.pending = False
            if bool(self.host):
                return True
        if not self.pending:
            self.host.copy_(~active.any(), non_blocking=True)
            self.event.record()
            self.pending = True
        return False
