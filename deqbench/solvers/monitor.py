"""The convergence monitor every built-in solver records its evaluations with.

``Monitor.observe`` runs once per evaluation of ``f`` in every solver, so it is the hot path of
the whole package, and it has one implementation per kind of device:

- on the CPU, where reading a value costs nothing, the per-sample bookkeeping is one compiled
  loop over the batch (`host_kernels.observe`) on NumPy views that share memory with the
  monitor's tensors, and best iterates are held by reference: a sample's row is copied when
  it stops improving or stops, not on every step;
- on CUDA it is all device ops, and "is every sample done?" is read from a flag copied
  asynchronously a step or two earlier, so the GPU never stalls.

Both give the same traces, best iterates and statuses (tests run the two on the same inputs).

The compiled loops do not check bounds, so every call a solver makes is checked first, in O(1)
Python (shapes, dtypes, devices, the budget): a solver that breaks one of the monitor's rules
gets a `MonitorMisuse` naming the rule, never a corrupted heap (the checks and the rules are in
`deqbench.solvers.monitor_checks`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from deqbench.solvers import host_kernels
from deqbench.solvers.host_kernels import CONVERGED, DIVERGED, RUNNING, views
from deqbench.solvers.inverse import InverseJacobian
from deqbench.solvers.monitor_checks import (
    RULE_OBSERVE,
    RULE_RETURN,
    MonitorChecks,
    MonitorMisuse,
    describe,
)
from deqbench.solvers.result import _EPS, SolverResult
from deqbench.solvers.workspace import Scratch

Fn = Callable[[Tensor], Tensor]
STOP_MODES = ("abs", "rel")


@dataclass(eq=False)
class Monitor(MonitorChecks):
    """Per-sample residuals, traces, best iterate and status, in preallocated buffers.

    ``observe(z, fz, g)`` with ``g = fz − z`` records one evaluation and answers "may the solve
    stop?". On the CPU the monitor may hold an observed iterate as the best one without
    copying it, so a solver that reuses an iterate's buffer calls `release` on it first.

    A sample that stopped (``active`` False) is ignored from then on: its trace keeps its last
    residual, its best iterate and status are final. It may go on moving with the batch (``f``
    runs on every sample anyway); only diverged samples must stay put (`hold_diverged`), lest
    they overflow.
    """

    z0: Tensor
    budget: int
    tol: float
    stop_mode: str
    divergence: float
    #: Keep the books on the host, in compiled loops (None: when ``z0`` is on the CPU). False
    #: runs the device path on any tensor: the tests check it on the CPU against the host path.
    host: bool | None = None
    #: Where `buffer` takes a solver's scratch buffers from (None: always fresh ones).
    scratch: Scratch | None = field(default=None, repr=False)
    #: The caller asks for the solver's inverse-Jacobian estimate: a solver that offers one
    #: (``Solver.offers_inverse``) sets `inverse` before it returns.
    keep_inverse: bool = False
    inverse: InverseJacobian | None = field(default=None, repr=False)
    nfe: int = 0
    active: Tensor = field(init=False)
    _buffers: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        z0 = self.z0
        if not isinstance(z0, Tensor) or z0.dim() != 2:
            raise ValueError(f"the monitor takes a flat (B, D) state, got {describe(z0)}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be 'abs' or 'rel', got {self.stop_mode!r}")
        # What every iterate must match, and the traces' length: `budget` is a public field a
        # solver could change, `_cap` is what the compiled loop may index.
        self._shape, self._dtype, self._device = z0.shape, z0.dtype, z0.device
        self._dims, self._cap = tuple(z0.shape), self.budget
        on_cpu = z0.device.type == "cpu"
        if self.host is None:
            self.host = on_cpu
        elif self.host and not on_cpu:
            raise ValueError(f"host bookkeeping needs CPU tensors, got {z0.device}")
        real = torch.float64 if z0.dtype in (torch.float64, torch.complex128) else torch.float32
        # Norms are written in place (`out=`) when the state's norm has the traces' dtype; a
        # half-precision state goes through a cast.
        self._norm_out = _norm_dtype(z0.dtype) == real
        # On the host, norms in one compiled pass where the kernels take the dtype.
        self._fused = self.host and host_kernels.handles(z0.dtype)
        self._rel = self.stop_mode == "rel"
        if self.host:
            self._init_host(real)
        else:
            self._init_device(real)
        # Row 0: absolute, row 1: relative residuals, of each evaluation.
        self.abs_trace, self.rel_trace = self._traces.unbind(0)
        # This step's ‖f(z) − z‖ and ‖f(z)‖ (then the relative residual), before the traces.
        self._norm_g, self._norm_f = self._norms.unbind(0)

    # -- the interface solvers use -----------------------------------------------------------

    def observe(self, z: Tensor, fz: Tensor, g: Tensor | None = None) -> bool:
        """Record iterate ``z`` with ``fz = f(z)``; True when the solve may stop.

        Pass ``g = fz − z`` when you have it; without it the monitor forms the residual norm
        itself (on the CPU in one pass over ``z`` and ``fz``, never storing ``fz − z``).
        ``z``, ``fz`` and ``g`` must be tensors like ``z0`` (shape, dtype, device), else
        `MonitorMisuse`.
        """
        if self._fused:
            fz_np = self._view("f(z)", fz)
            if g is None:
                host_kernels.residual_norms(self._view("z", z), fz_np, self._norms_np)
            else:
                self._check("observe", "z", z)
                host_kernels.norms(self._view("g", g), fz_np, self._norms_np)
            return self._record("observe", z)
        self._check("observe", "z", z)
        self._check("observe", "f(z)", fz)
        if g is None:
            g = fz - z
        else:
            self._check("observe", "g", g)
        if self._norm_out:
            torch.linalg.vector_norm(g, dim=1, out=self._norm_g)
            torch.linalg.vector_norm(fz, dim=1, out=self._norm_f)
        else:
            self._norm_g.copy_(torch.linalg.vector_norm(g, dim=1))
            self._norm_f.copy_(torch.linalg.vector_norm(fz, dim=1))
        return self._record("observe", z)

    @property
    def norms(self) -> Tensor:
        """(2, B) buffer for ‖f(z) − z‖ and ‖f(z)‖ of the evaluation `observe_norms` records."""
        return self._norms

    def observe_norms(self, z: Tensor) -> bool:
        """`observe` for a solver that wrote this evaluation's norms into `norms` itself (while
        it made another pass over the state, say). A negative norm is a `MonitorMisuse`: the
        buffer starts at −1, so a solver that never writes it fails at its first evaluation
        (the CPU path checks every evaluation, a device the first only: no sync per step)."""
        self._check("observe_norms", "z", z)
        if not self.host and self.nfe == 0 and bool((self._norms < 0).any()):
            raise self._unwritten()
        return self._record("observe_norms", z)

    def _record(self, method: str, z: Tensor) -> bool:
        """Record evaluation `nfe` at ``z`` (checked) from the norms in `norms`."""
        k = self.nfe
        if not 0 <= k < self._cap:  # the traces' row k: past them is someone else's memory
            raise MonitorMisuse(
                f"{method}: evaluation {k + 1} is outside the budget of {self._cap} "
                f"evaluations ({RULE_RETURN})"
            )
        self.nfe = k + 1
        if self.host:
            return self._observe_host(k, z)
        return self._observe_device(k, z)

    def hold_diverged(self, new: Tensor, old: Tensor) -> Tensor:
        """``new`` (``(B, D)``), with the rows of diverged samples taken from ``old``.

        On the CPU it writes those rows into ``new`` and returns it (``new`` itself while no
        sample diverged): pass a step of its own (fresh, or a `next_iterate` buffer), not a
        tensor you still need. On a device it is one ``torch.where``. Both must be like ``z0``
        (`MonitorMisuse`; on the CPU, while no sample diverged, ``new`` is checked when it is
        observed).
        """
        if not self.host:
            self._check("hold_diverged", "new", new)
            self._check("hold_diverged", "old", old)
            return torch.where(self.status[:, None] == DIVERGED, old, new)
        if self._diverged is None:
            return new
        self._check("hold_diverged", "new", new)
        self._check("hold_diverged", "old", old)
        return new.index_copy_(0, self._diverged, old.index_select(0, self._diverged))

    def next_iterate(self, z: Tensor) -> Tensor:
        """A buffer to write the iterate after ``z`` into: one of two, by turns (never ``z``).

        A fresh tensor per step costs more than it seems on the CPU: the allocator maps a
        large one afresh, and every page of it faults in on first write (hundreds of faults per
        2 MB state). `release` has run on the buffer.
        """
        if self._buffers is None:
            self._buffers = (torch.empty_like(self.z0), torch.empty_like(self.z0))
        first, second = self._buffers
        buf = second if z is first else first
        self.release(buf)
        return buf

    def buffer(self, name: str, *shape: int) -> Tensor:
        """A scratch buffer of ``z0``'s dtype and device, contents undefined. On the CPU it is
        the memory of the solver's last solve where ``name`` and ``shape`` match (see
        `deqbench.solvers.workspace`): use it for histories and directions, never for an
        iterate that could come back as the result."""
        if self.scratch is None:
            return self.z0.new_empty(shape)
        return self.scratch.empty(name, *shape)

    def release(self, z: Tensor) -> None:
        """Call before writing into ``z``, an iterate already observed: the monitor copies out
        the best rows it still holds there by reference."""
        if self.host and self._ref is not self._best and self._ref.data_ptr() == z.data_ptr():
            self._settle()

    def result(self) -> SolverResult:
        """The solve's record (call once the solver is done, after at least one `observe`)."""
        if self.nfe == 0:
            raise MonitorMisuse(
                f"result: no evaluation was observed; a solve makes at least one ({RULE_OBSERVE})"
            )
        n = self.nfe
        z = self._best_rows() if self.host else self._best
        return SolverResult(
            z=z.clone() if z is self.z0 else z,  # never hand the caller's own start back
            nstep=self.nstep,
            best_step=self.best_step.clamp(max=n - 1),
            nfe=self.nfe,
            abs_trace=self.abs_trace[:n],
            rel_trace=self.rel_trace[:n],
            sample_status=self.status,
            stop_mode=self.stop_mode,
            tol=self.tol,
            inverse=self.inverse if self.keep_inverse else None,
        )

    # -- CPU: compiled bookkeeping on shared NumPy views -------------------------------

    def _init_host(self, real: torch.dtype) -> None:
        # Allocated in NumPy and shared with torch: cheaper than the other way round, which
        # matters to solves of a few evaluations.
        batch, dtype = self.z0.shape[0], np.float64 if real == torch.float64 else np.float32
        self._tr = np.zeros((2, self.budget, batch), dtype=dtype)
        # −1 until a solver writes norms: `observe_norms` refuses a negative norm.
        self._norms_np = np.full((2, batch), -1, dtype=dtype)
        self._np_dtype = np.dtype(dtype)  # what `_view` checks observed arrays against
        ints = np.zeros((2, batch), dtype=np.int64)
        self._best_step, self._nstep = ints
        self._status = np.full(batch, RUNNING, dtype=np.int8)
        self._act = np.ones(batch, dtype=bool)
        self._traces, self._norms = torch.from_numpy(self._tr), torch.from_numpy(self._norms_np)
        self.best_step, self.nstep = torch.from_numpy(ints).unbind(0)
        self.status, self.active = torch.from_numpy(self._status), torch.from_numpy(self._act)
        self._best_r = np.full(batch, np.inf, dtype=dtype)
        # The divergence bound: `divergence` × the lowest absolute residual so far, kept at or
        # below the largest float so that an infinite residual always exceeds it.
        self._bound = np.full(batch, np.finfo(dtype).max, dtype=dtype)
        # Scalars in the traces' dtype, so that the kernel compares as the device path does.
        self._tol_np, self._div_np = dtype(self.tol), dtype(self.divergence)
        self._better = np.zeros(batch, dtype=bool)
        self._every_row = np.ones(batch, dtype=bool)  # never written
        # Best iterates: rows `_ref_rows` of `_ref` (an observed iterate, held without a copy);
        # the other samples' rows were copied into `_best` when they left `_ref`.
        self._ref, self._ref_rows = self.z0, self._every_row
        # Allocated up front (not when first needed) so the solver's memory is one figure.
        self._best = torch.empty_like(self.z0)
        # Rows are copied by a kernel where it takes the dtype, else by torch.
        self._np_rows = host_kernels.handles(self.z0.dtype)
        self._diverged: Tensor | None = None  # row indices of diverged samples, if any
        if self.z0.numel() >= host_kernels.GRAIN:  # only such states take threaded loops; a
            host_kernels.use_torch_threads()  # process that never starts them can fork freely

    def _observe_host(self, k: int, z: Tensor) -> bool:
        improved, running, stopped = host_kernels.observe(
            k,
            self._norms_np,
            self._tr,
            self._act,
            self._best_r,
            self._best_step,
            self._bound,
            self._status,
            self._nstep,
            self._better,
            self._tol_np,
            self._div_np,
            self._rel,
        )
        if improved < 0:  # a negative norm: the kernel wrote nothing, nor is it counted
            self.nfe = k
            raise self._unwritten()
        if improved:
            self._take_rows(improved == len(self._better), z)
        if stopped:
            diverged = np.flatnonzero(self._status == DIVERGED)
            self._diverged = torch.from_numpy(diverged) if diverged.size else None
        return self.nfe >= self.budget or not running

    def _take_rows(self, every: bool, z: Tensor) -> None:
        """Make ``z[i]`` the best iterate of each sample ``i`` the kernel flagged ``better``."""
        if not every:  # first copy out the best rows only the old reference holds
            self._copy_out(self._ref_rows, self._better)
        self._ref, self._ref_rows = z, self._every_row if every else self._better.copy()

    def _copy_out(self, rows: np.ndarray, skip: np.ndarray) -> None:
        """Copy the reference's ``rows`` (but not those in ``skip``) into `_best`."""
        if self._np_rows:
            host_kernels.copy_rows(rows, skip, *views(self._ref, self._best))
        else:
            i = torch.from_numpy(np.flatnonzero(rows & ~skip))
            self._best.index_copy_(0, i, self._ref.index_select(0, i))

    def _best_rows(self) -> Tensor:
        """(B, D) every sample's best iterate."""
        if self._ref_rows is self._every_row:
            return self._ref
        self._settle()
        return self._best

    def _settle(self) -> None:
        """Copy the best rows the reference still holds into `_best`, which then holds all."""
        self._copy_out(self._ref_rows, ~self._ref_rows)
        self._ref, self._ref_rows = self._best, self._every_row

    # -- CUDA: device ops only, no host sync -----------------------------------------------

    def _init_device(self, real: torch.dtype) -> None:
        z0, batch = self.z0, self.z0.shape[0]
        self._traces = z0.new_zeros(2, self.budget, batch, dtype=real)
        self._norms = z0.new_full((2, batch), -1, dtype=real)  # see `observe_norms`
        self.best_step = z0.new_zeros(batch, dtype=torch.long)
        self.nstep = z0.new_zeros(batch, dtype=torch.long)
        self.status = z0.new_full((batch,), RUNNING, dtype=torch.int8)
        self.active = z0.new_ones(batch, dtype=torch.bool)
        self._best = z0.clone()
        self._best_r = z0.new_full((batch,), float("inf"), dtype=real)
        self._bound_t = z0.new_full((batch,), torch.finfo(real).max, dtype=real)
        # Tensor constants: a Python number in a binary op costs a conversion on every call.
        self._codes = z0.new_tensor([CONVERGED, RUNNING, DIVERGED], dtype=torch.int8).unbind(0)
        self._tol = z0.new_tensor(self.tol, dtype=real)
        self._div = z0.new_tensor(self.divergence, dtype=real)
        self._scaled = z0.new_empty(batch, dtype=real)  # divergence × this step's residual
        self._bounded = z0.new_empty(batch, dtype=torch.bool)  # residual within the bound
        self._flag = _DoneFlag(z0.device)

    def _observe_device(self, k: int, z: Tensor) -> bool:
        active, abs_r, rel_r = self.active, self._norm_g, self._norm_f
        torch.div(abs_r, rel_r.clamp_min_(_EPS), out=rel_r)
        r = rel_r if self._rel else abs_r
        res = self._traces[:, k]
        if k:  # samples that stopped keep their last residual
            torch.where(active, self._norms, self._traces[:, k - 1], out=res)
            better = active.clone() if k == 1 else torch.lt(r, self._best_r).logical_and_(active)
            torch.where(better, r, self._best_r, out=self._best_r)
            torch.where(better[:, None], z, self._best, out=self._best)
            self.best_step.masked_fill_(better, k)
        else:
            res.copy_(self._norms)
        bounded = torch.le(abs_r, self._bound_t, out=self._bounded)
        torch.fmin(self._bound_t, torch.mul(abs_r, self._div, out=self._scaled), out=self._bound_t)
        self.nstep.masked_fill_(active, k)
        conv, running, div = self._codes
        code = torch.where(torch.le(r, self._tol), conv, torch.where(bounded, running, div))
        torch.where(active, code, self.status, out=self.status)
        torch.eq(self.status, running, out=active)
        return self.nfe >= self.budget or self._flag.all_false(active)


@functools.cache
def _norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a norm of a ``dtype`` tensor (real for complex)."""
    return torch.empty(0, dtype=dtype).abs().dtype


class _DoneFlag:
    """Answers "is no sample active?" without a device sync (one or two steps late)."""

    def __init__(self, device: torch.device) -> None:
        self.host = torch.zeros((), dtype=torch.bool, pin_memory=torch.cuda.is_available())
        self.event = torch.cuda.Event() if device.type == "cuda" else None
        self.pending = False

    def all_false(self, active: Tensor) -> bool:
        if self.event is None:  # another accelerator: a plain (syncing) read
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
