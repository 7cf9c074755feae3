"""The root-solver interface, its result record, and the convergence monitor solvers share.

A solver finds ``z = f(z)`` for ``f`` on flat ``(B, D)`` tensors. Norms, stopping, the best
iterate and the status are all per sample. Divergence is reported in the result, never raised.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

Fn = Callable[[Tensor], Tensor]
STOP_MODES = ("abs", "rel")
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
    """

    affine_only: ClassVar[bool] = False
    divergence: float = 1e4

    def __post_init__(self) -> None:
        if not self.divergence > 1:
            raise ValueError(f"divergence must be > 1, got {self.divergence}")

    def __call__(
        self, f: Fn, z0: Tensor, *, max_iter: int = 50, tol: float = 1e-4, stop_mode: str = "rel"
    ) -> SolverResult:
        """Solve ``z = f(z)`` from ``z0`` (``(B, D)``); at most ``max_iter`` calls of ``f``."""
        check_call(z0, max_iter, tol, stop_mode)
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

    ``observe`` is on every solver's hot path: it writes into its buffers (``out=``), and on the
    CPU, where reading a flag costs nothing, it copies whole rows instead of selecting them
    element by element when every sample takes the same branch (``torch.where`` is not
    vectorised there: several times the cost of a copy).
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
        # Row 0: absolute, row 1: relative; one buffer so one `where` writes both traces.
        self._traces = z0.new_zeros(2, self.budget, batch, dtype=real)
        self.abs_trace, self.rel_trace = self._traces.unbind(0)
        self.best_z = z0.clone()
        self.best_r = z0.new_full((batch,), float("inf"), dtype=real)
        # The divergence bound: `divergence` × the lowest absolute residual so far, kept at or
        # below the largest float so that an infinite residual always exceeds it.
        self._bound = z0.new_full((batch,), torch.finfo(real).max, dtype=real)
        self.best_step = z0.new_zeros(batch, dtype=torch.long)
        self.nstep = z0.new_zeros(batch, dtype=torch.long)
        self.status = z0.new_ones(batch, dtype=torch.int8)  # max_iter until shown otherwise
        self.active = z0.new_ones(batch, dtype=torch.bool)
        # Tensor constants: a Python number in a binary op costs a conversion on every call.
        self._codes = z0.new_tensor([0, 1, 2], dtype=torch.int8).unbind(0)
        self._tol = z0.new_tensor(self.tol, dtype=real)
        self._div = z0.new_tensor(self.divergence, dtype=real)
        self._cpu = z0.device.type == "cpu"
        self._flag = _DoneFlag(z0.device)
        # On the CPU, True while every sample is active: the common case, with a shorter path.
        self._every = self._cpu
        self._scaled = z0.new_empty(batch, dtype=real)  # divergence × this step's residual
        self._bounded = z0.new_empty(batch, dtype=torch.bool)  # residual within the bound

    def observe(self, z: Tensor, fz: Tensor, g: Tensor) -> bool:
        """Record iterate ``z`` with ``fz = f(z)``, ``g = fz − z``; True when the solve may stop."""
        k, active, every = self.nfe, self.active, self._every
        self.nfe += 1
        res = self._traces[:, k]
        abs_r, rel_r = self.abs_trace[k], self.rel_trace[k]
        torch.linalg.vector_norm(g, dim=1, out=abs_r)
        torch.linalg.vector_norm(fz, dim=1, out=rel_r)
        torch.div(abs_r, rel_r.clamp_min_(_EPS), out=rel_r)
        r = rel_r if self.stop_mode == "rel" else abs_r
        if not every:  # samples that stopped keep their last residual in the trace
            torch.where(active, res, self._traces[:, k - 1 if k else 0], out=res)

        if k:  # the start is never the answer once a step exists (a zero start = no gradient)
            better = active if k == 1 else torch.lt(r, self.best_r)
            if not every and k > 1:
                better &= active
            torch.where(better, r, self.best_r, out=self.best_r)
            self._copy_rows(better, z, self.best_z)
            self.best_step.masked_fill_(better, k)
        # ``abs_r <= min(bound, divergence·abs_r)`` is ``abs_r <= bound`` (false for inf, NaN).
        bounded = torch.le(abs_r, self._bound, out=self._bounded)
        torch.minimum(self._bound, torch.mul(abs_r, self._div, out=self._scaled), out=self._bound)
        if every and bool(torch.gt(r, self._tol).logical_and_(bounded).all()):
            return self.nfe >= self.budget  # every sample still runs: nothing else changes

        self.nstep.masked_fill_(active, k)  # `result` fills it in while every sample runs
        conv, running, div = self._codes
        code = torch.where(torch.le(r, self._tol), conv, torch.where(bounded, running, div))
        torch.where(active, code, self.status, out=self.status)
        torch.eq(self.status, running, out=active)  # not yet converged or diverged
        self._every = False  # (on the CPU) some sample has stopped, here or before
        return self.nfe >= self.budget or self._flag.all_false(active)

    def where_active(self, new: Tensor, old: Tensor) -> Tensor:
        """``new`` for samples still active, ``old`` for those that stopped (``(B, D)``).

        Equal to ``torch.where(monitor.active[:, None], new, old)``, but on the CPU it returns
        ``new`` itself while every sample is active (most of a solve), skipping the select.
        """
        if self._cpu and bool(self.active.all()):
            return new
        return torch.where(self.active[:, None], new, old)

    def _copy_rows(self, mask: Tensor, src: Tensor, dst: Tensor) -> None:
        """``dst[i] = src[i]`` where ``mask[i]``, in place."""
        if self._cpu:
            if bool(mask.all()):
                dst.copy_(src)
                return
            if not bool(mask.any()):
                return
        torch.where(mask[:, None], src, dst, out=dst)

    def result(self) -> SolverResult:
        n = max(self.nfe, 1)
        if self._every:  # no sample has stopped, and `observe` left `nstep` behind
            self.nstep.fill_(n - 1)
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
