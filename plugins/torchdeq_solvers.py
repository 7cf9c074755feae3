"""TorchDEQ's solvers and implicit backward as deqbench solvers and a gradient estimator.

Registered by the light entry module `deqbench_plugins.torchdeq_adapter` when TorchDEQ is
installed.

``torchdeq-fixed-point``, ``torchdeq-anderson`` and ``torchdeq-broyden`` run TorchDEQ's own
solver functions, so a suite can set them beside deqbench's. Their result is rebuilt from what
TorchDEQ reports, honestly:

- ``nfe``: calls of ``f``, counted by a wrapper (TorchDEQ's Broyden makes ``max_iter + 1``, so
  it is given one step less; its Anderson always makes two before its first mixing step);
- traces: TorchDEQ's own, one row per evaluation it traced, without its placeholder first
  column and the copies of its lowest values it pads with after stopping. The evaluations it
  does not trace (Anderson's first two, Broyden's first) get a row measured by the wrapper, so
  ``T == nfe``. Its relative residual adds 1e-9 to ``‖f(z)‖`` where deqbench floors it at 1e-30;
- ``z``: TorchDEQ's lowest-residual estimate (for fixed-point and Anderson that is ``f`` of the
  best iterate, whose residual is usually lower than the one reported);
- status: converged when the lowest residual TorchDEQ considered is ≤ tol; diverged when the
  trace turns non-finite or grows ``divergence`` times above its lowest; else max_iter;
- ``nstep``: the same for every sample: TorchDEQ stops the whole batch at once.

``torchdeq-ift`` is TorchDEQ's own implicit backward (``backward_factory("ift")``, its
``autograd.Function`` version, which re-evaluates ``f`` in the backward) with one of the solvers
above, so its time and memory can be set beside deqbench's ``ift``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from deqbench.gradients.base import GradContext, GradientEstimator
from deqbench.solvers.base import (
    STOP_MODES,
    Fn,
    Monitor,
    Solver,
    SolverResult,
    check_call,
    residual_norms,
)

# What the conformance kit finds (`deqbench.testing.solvers`), recorded rather than patched:
# the adapter shows TorchDEQ as it is.
_BATCH_STOP = "TorchDEQ stops the whole batch when its worst sample converges"
_NAN = (
    "a non-finite iterate poisons TorchDEQ's kept estimate: it keeps it with "
    "mask·x + (1 − mask)·y, and 0·inf is NaN"
)


class _Counted:
    """``f`` with a count of its calls and the residual norms of its first ``keep`` calls."""

    def __init__(self, f: Fn, keep: int) -> None:
        self.f, self.keep, self.calls = f, keep, 0
        self.rows: list[Tensor] = []  # (2, B): abs, rel

    def __call__(self, z: Tensor) -> Tensor:
        fz = self.f(z)
        if self.calls < self.keep:
            self.rows.append(torch.stack(residual_norms(z, fz)))
        self.calls += 1
        return fz


@dataclass(kw_only=True)
class _TorchDEQSolver(Solver):
    """Runs a TorchDEQ solver function; subclasses name it and map options and budgets."""

    known_deviations: ClassVar[dict[str, str]] = {"per_sample": _BATCH_STOP, "divergence": _NAN}
    function: ClassVar[str]  #: the key in ``torchdeq.solver``'s registry
    untraced: ClassVar[int]  #: evaluations before the first one TorchDEQ traces
    min_budget: ClassVar[int] = 1  #: evaluations TorchDEQ makes whatever its ``max_iter``

    def steps(self, max_iter: int) -> int:
        """TorchDEQ's ``max_iter`` that spends at most ``max_iter`` evaluations."""
        return max_iter

    def options(self) -> dict[str, Any]:
        return {}

    def solve(self, f: Fn, z0: Tensor, monitor: Monitor) -> None:
        raise TypeError(f"{type(self).__name__} runs TorchDEQ's loop through __call__")

    def __call__(
        self, f: Fn, z0: Tensor, *, max_iter: int = 50, tol: float = 1e-4, stop_mode: str = "rel"
    ) -> SolverResult:
        check_call(z0, max_iter, tol, stop_mode)
        from torchdeq.solver import get_solver

        counted = _Counted(f, self.untraced)
        with torch.no_grad():
            if max_iter < self.min_budget:  # TorchDEQ would overspend: evaluate the start only
                z, info = z0, None
                counted(z0)
            else:
                solve = get_solver(self.function)
                options = self.options()
                z, _, info = solve(
                    counted,
                    z0,
                    max_iter=self.steps(max_iter),
                    tol=tol,
                    stop_mode=stop_mode,
                    **options,
                )
            return self._result(z, counted, info, tol, stop_mode)

    def _result(
        self, z: Tensor, counted: _Counted, info: Any, tol: float, stop_mode: str
    ) -> SolverResult:
        traced = max(counted.calls - len(counted.rows), 0)
        own = [torch.stack(counted.rows, dim=2)] if counted.rows else []
        theirs = []
        if info is not None and traced:
            # TorchDEQ's traces are (B, 1 + N): a placeholder, then rows, then padding.
            theirs = [torch.stack([info["abs_trace"], info["rel_trace"]])[:, :, 1 : 1 + traced]]
        traces = torch.cat([t.to(z.dtype) for t in own + theirs], dim=2).transpose(1, 2)
        abs_trace, rel_trace = traces[0], traces[1]  # (T, B)
        r = rel_trace if stop_mode == "rel" else abs_trace
        # The rows TorchDEQ chose its estimate from; only the start when it traced nothing.
        first = len(counted.rows) if theirs else 0
        best_step = first + r[first:].nan_to_num(float("inf")).argmin(0)
        best = r.gather(0, best_step[None]).squeeze(0)
        finite = torch.isfinite(abs_trace).all(0)
        grew = abs_trace[-1] > self.divergence * abs_trace.nan_to_num(float("inf")).amin(0)
        status = torch.ones_like(best_step, dtype=torch.int8)
        status.masked_fill_(~finite | grew, 2)
        status.masked_fill_(best <= tol, 0)
        t = abs_trace.shape[0]
        return SolverResult(
            z=z.reshape(z.shape[0], -1),
            nstep=torch.full_like(best_step, t - 1),
            best_step=best_step,
            nfe=counted.calls,
            abs_trace=abs_trace,
            rel_trace=rel_trace,
            sample_status=status,
            stop_mode=stop_mode,
            tol=tol,
        )


@dataclass(kw_only=True)
class TorchDEQFixedPoint(_TorchDEQSolver):
    """TorchDEQ's ``fixed_point_iter``; ``tau`` damps the step."""

    known_deviations: ClassVar[dict[str, str]] = {
        **_TorchDEQSolver.known_deviations,
        "reported": "its estimate is f of its lowest-residual iterate, whose residual is not "
        "the one reported (on an alternating map, twice it)",
    }
    function: ClassVar[str] = "fixed_point_iter"
    untraced: ClassVar[int] = 0
    tau: float = 1.0

    def options(self) -> dict[str, Any]:
        return {"tau": self.tau}


@dataclass(kw_only=True)
class TorchDEQAnderson(_TorchDEQSolver):
    """TorchDEQ's ``anderson_solver`` (window ``m``, absolute ridge ``lam``, damping ``tau``)."""

    known_deviations: ClassVar[dict[str, str]] = {
        "per_sample": _BATCH_STOP,
        "divergence": _NAN + "; its Anderson also raises on the singular system it meets",
        "scale": "its ridge λ·I is absolute: the same problem at a small scale mixes as a "
        "plain average and takes more steps",
        "held": "its Anderson raises on the singular system a diverging sample gives it",
    }
    function: ClassVar[str] = "anderson"
    untraced: ClassVar[int] = 2
    min_budget: ClassVar[int] = 2
    m: int = 6
    lam: float = 1e-4
    tau: float = 1.0

    def options(self) -> dict[str, Any]:
        return {"m": self.m, "lam": self.lam, "tau": self.tau}


@dataclass(kw_only=True)
class TorchDEQBroyden(_TorchDEQSolver):
    """TorchDEQ's ``broyden_solver``. ``memory``: rank-1 pairs kept (None: one per step, so
    its buffers grow with ``max_iter``)."""

    function: ClassVar[str] = "broyden"
    untraced: ClassVar[int] = 1
    memory: int | None = None

    def steps(self, max_iter: int) -> int:
        return max_iter - 1  # it evaluates the start, then once per step

    def options(self) -> dict[str, Any]:
        return {"LBFGS_thres": self.memory}


_BACKWARD_SOLVERS = {
    "fixed-point": TorchDEQFixedPoint,
    "anderson": TorchDEQAnderson,
    "broyden": TorchDEQBroyden,
}


@dataclass(kw_only=True)
class TorchDEQIFT(GradientEstimator):
    """TorchDEQ's implicit backward with its ``solver`` (fixed-point, anderson or broyden).

    ``max_iter``, ``tol`` and ``stop_mode`` override the DEQ layer's ``b_*`` settings when set;
    the backward solve's record lands in ``stats.backward`` like deqbench's own ``ift``.
    """

    solver: str = "anderson"
    max_iter: int | None = None
    tol: float | None = None
    stop_mode: str | None = None

    def __post_init__(self) -> None:
        if self.solver not in _BACKWARD_SOLVERS:
            raise ValueError(
                f"solver must be one of {', '.join(_BACKWARD_SOLVERS)}, got {self.solver!r}"
            )
        if self.stop_mode is not None and self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be 'abs' or 'rel', got {self.stop_mode!r}")

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        from torchdeq.grad import backward_factory

        if z_star is None:
            raise ValueError("torchdeq-ift needs the equilibrium z*")
        solver = _BACKWARD_SOLVERS[self.solver]()
        settings = {
            "max_iter": ctx.b_max_iter if self.max_iter is None else self.max_iter,
            "tol": ctx.b_tol if self.tol is None else self.tol,
            "stop_mode": ctx.b_stop_mode if self.stop_mode is None else self.stop_mode,
        }

        def b_solver(adjoint_map: Fn, start: Tensor, **_: Any) -> tuple[Tensor, list, None]:
            result = solver(adjoint_map, start, **settings)  # TorchDEQ's loop, counted
            ctx.stats.record_backward(result)
            return result.z, [], None

        (out,) = backward_factory("ift", b_solver=b_solver)(None, f, z_star.detach())
        return out
