"""Conformance kit for root solvers: ``check_solver("my-solver")``.

It holds a solver (by registered name, or an instance) to what the rest of deqbench relies on,
each a plain function that raises AssertionError saying what went wrong:

- ``linear``: converges on contractive affine maps to ``torch.linalg.solve``'s answer;
- ``budget``: never calls ``f`` more than ``max_iter`` times, and says ``max_iter`` when the
  tolerance is out of reach;
- ``tolerance``: a sample marked converged has a residual ≤ tol, recomputed at the returned
  ``z``, and the reported residual does not understate it (``abs`` and ``rel``);
- ``record``: the result's shapes, dtypes and counts agree (traces ``(T, B)``, ``T ≤ nfe``);
- ``divergence``: a map whose residual blows up is reported ``diverged``, without raising, and
  the returned ``z`` is finite;
- ``scale``: the same problem at scale 1e-3 and 1e3 (``f_s(z) = s·f(z/s)``) takes the same number
  of evaluations within ±10%;
- ``tiny``: the affine backward-like system ``z = Jᵀz + v`` with ``v`` ≈ 1e-6 converges from a
  zero start, and the answer returned is not the zero start;
- ``per_sample``: in a batch of an easy and a hard sample the easy one stops first, right;
- ``repeat``: one instance solving two problems in turn leaves the first result untouched
  (buffers kept between solves must never hold a result), and solving the first again gives
  the first answer (nothing left from an earlier solve steers a later one);
- ``reported``: on an alternating map, where the best iterate is not the last, the returned
  ``z``'s residuals, recomputed, are the ones the result reports: the iterate the monitor
  holds was never written into without ``monitor.release`` (rule 1 of the solver guide);
- ``held``: once a sample diverged, ``f`` only sees it at points it was evaluated at before,
  while a converging sample beside it goes on: every step went through
  ``monitor.hold_diverged`` (rule 2).

A solver that misuses its monitor (`MonitorMisuse`: an evaluation past the budget, an iterate
of the wrong shape, ...) fails the check it was in, with the monitor's message.

Two class attributes of the solver steer it: ``affine_only = True`` (see `Solver`) skips the
checks on nonlinear maps (``divergence``, ``scale``); ``known_deviations``, a mapping of check
name to reason, skips checks a solver is known to fail, and says why (adapters of other
libraries use it; a new solver should not need it).

In pytest::

    @pytest.mark.parametrize(("solver", "check"), solver_conformance_params("my-solver"))
    def test_conformance(solver, check):
        run_solver_check(solver, check)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from deqbench.deq import bind
from deqbench.plugins import get_cell, get_solver
from deqbench.solvers.base import Fn, Solver, SolverResult
from deqbench.solvers.monitor import MonitorMisuse

Check = Callable[..., None]
NONLINEAR = ("divergence", "scale", "held")  # the checks an affine-only solver skips


def resolve(solver: str | Solver, **options: Any) -> Solver:
    """A solver instance: ``solver`` itself, or the registered name built with ``options``."""
    if isinstance(solver, str):
        return get_solver(solver, **options)
    if options:
        raise TypeError("options are only for a solver given by name")
    return solver


def cell_problem(
    cell: str, *, batch: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32, **options: Any
) -> tuple[Fn, Tensor]:
    """A registered cell at fixed weights as a solver problem: flat ``f`` and its start ``z0``.

    The input is ``N(0, 1)`` of the cell's ``input_shape``, drawn from ``seed``.
    """
    module = get_cell(cell, **options).to(dtype=dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *module.input_shape, generator=gen, dtype=dtype)
    with torch.no_grad():
        bound = bind(module, x)
    return bound.f, bound.z0


def _name(solver: str | Solver) -> str:
    return solver if isinstance(solver, str) else type(solver).__name__


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-5


def _affine(
    batch: int, dim: int, rho: float, dtype: torch.dtype, device: Any, seed: int, scale: float = 1
) -> tuple[Fn, Tensor, Tensor]:
    """``f(z) = A z + b`` per sample with ``‖A‖₂ = rho``; returns ``f``, ``b`` and the answer."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    a *= rho / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * scale
    eye = torch.eye(dim, dtype=torch.float64)
    answer = torch.linalg.solve(eye - a, b.T).T
    a, b, answer = (t.to(device=device, dtype=dtype) for t in (a, b, answer))
    return (lambda z: z @ a.T + b), b, answer


def _tanh(dim: int, rho: float, dtype: torch.dtype, device: Any, seed: int) -> tuple[Fn, Tensor]:
    """``f(z) = tanh(W z + c)`` with ``‖W‖₂ = rho`` and a symmetric spread spectrum."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    w = q @ torch.diag(torch.linspace(-rho, rho, dim, dtype=torch.float64)) @ q.T
    c = torch.randn(4, dim, generator=gen, dtype=torch.float64) * 0.3
    w, c = w.to(device=device, dtype=dtype), c.to(device=device, dtype=dtype)
    return (lambda z: torch.tanh(z @ w.T + c)), c


def _residuals(f: Fn, z: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        fz = f(z)
        abs_r = torch.linalg.vector_norm(fz - z, dim=1)
        return abs_r, abs_r / torch.linalg.vector_norm(fz, dim=1).clamp_min(1e-30)


def _rel_error(z: Tensor, answer: Tensor) -> float:
    return float((z - answer).norm() / answer.norm())


def _fail(name: str, check: str, message: str) -> AssertionError:
    return AssertionError(f"solver {name!r} fails {check!r}: {message}")


def check_linear(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Contractive affine maps (ρ = 0.5 and 0.9) converge to the exact fixed point."""
    s, tol = resolve(solver), _tol(dtype)
    for rho in (0.5, 0.9):
        f, b, answer = _affine(4, 32, rho, dtype, device, seed=1)
        result = s(f, torch.zeros_like(b), max_iter=500, tol=tol, stop_mode="rel")
        if not bool(result.converged.all()):
            raise _fail(_name(solver), "linear", f"ρ = {rho}: {result.message}")
        err = _rel_error(result.z, answer)
        if not err <= 100 * tol / (1 - rho):
            raise _fail(_name(solver), "linear", f"ρ = {rho}: relative error {err:.2e}")


def check_budget(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """At most ``max_iter`` calls of ``f``, status ``max_iter`` when tol is out of reach."""
    s = resolve(solver)
    f, b, _ = _affine(4, 64, 0.95, dtype, device, seed=2)
    for max_iter in (2, 5):
        calls = 0

        def counted(z: Tensor, f: Fn = f) -> Tensor:
            nonlocal calls
            calls += 1
            return f(z)

        result = s(counted, torch.zeros_like(b), max_iter=max_iter, tol=1e-30, stop_mode="rel")
        where = f"max_iter = {max_iter}"
        if calls > max_iter or result.nfe > max_iter:
            raise _fail(_name(solver), "budget", f"{where}: {calls} calls, nfe {result.nfe}")
        if result.nfe != calls:
            raise _fail(_name(solver), "budget", f"{where}: nfe {result.nfe} but {calls} calls")
        if not bool((result.sample_status == 1).all()):
            raise _fail(_name(solver), "budget", f"{where}: status {result.sample_status.tolist()}")
        if not bool(torch.isfinite(result.z).all()):
            raise _fail(_name(solver), "budget", f"{where}: non-finite z")


def check_tolerance(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Converged samples meet tol at the returned ``z``; reported residuals are not too low."""
    s = resolve(solver)
    f, b, _ = _affine(6, 32, 0.8, dtype, device, seed=3, scale=10.0)
    slack = 1e-3 if dtype == torch.float64 else 1e-2
    for mode, tol in (("rel", 1e-4), ("abs", 1e-3)):
        result = s(f, torch.zeros_like(b), max_iter=200, tol=tol, stop_mode=mode)
        abs_r, rel_r = _residuals(f, result.z)
        true = rel_r if mode == "rel" else abs_r
        reported = result.rel_residual if mode == "rel" else result.abs_residual
        ok = result.converged
        if not bool(ok.any()):
            raise _fail(_name(solver), "tolerance", f"{mode}: nothing converged: {result.message}")
        if not bool((true[ok] <= tol * (1 + slack)).all()):
            raise _fail(
                _name(solver), "tolerance", f"{mode}: converged with residual {true[ok].max():.3e}"
            )
        if not bool((true <= reported * (1 + slack) + 1e-30).all()):
            raise _fail(
                _name(solver),
                "tolerance",
                f"{mode}: reports {reported.tolist()} where the returned z has {true.tolist()}",
            )


def check_record(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Shapes, dtypes and counts of the result record agree with each other."""
    s = resolve(solver)
    f, b, _ = _affine(5, 16, 0.7, dtype, device, seed=4)
    z0 = torch.zeros_like(b)
    result = s(f, z0, max_iter=30, tol=1e-6, stop_mode="rel")
    name, batch = _name(solver), b.shape[0]
    problems = []
    if not isinstance(result, SolverResult):
        raise _fail(name, "record", f"returned {type(result).__name__}, not a SolverResult")
    if result.z.shape != z0.shape or result.z.dtype != dtype:
        problems.append(f"z is {tuple(result.z.shape)} {result.z.dtype}")
    t = result.abs_trace.shape[0]
    if result.abs_trace.shape != (t, batch) or result.rel_trace.shape != (t, batch):
        problems.append(f"traces are {tuple(result.abs_trace.shape)}, not (T, {batch})")
    if not 1 <= t <= result.nfe <= 30:
        problems.append(f"T = {t}, nfe = {result.nfe} (need 1 ≤ T ≤ nfe ≤ max_iter)")
    for field in ("nstep", "best_step", "sample_status"):
        if getattr(result, field).shape != (batch,):
            problems.append(f"{field} is {tuple(getattr(result, field).shape)}")
    if not bool(((result.best_step >= 0) & (result.best_step < t)).all()):
        problems.append(f"best_step {result.best_step.tolist()} outside the trace")
    if not bool(((result.nstep >= 0) & (result.nstep < t)).all()):
        problems.append(f"nstep {result.nstep.tolist()} outside the trace")
    if not set(result.sample_status.tolist()) <= {0, 1, 2}:
        problems.append(f"sample_status {result.sample_status.tolist()}")
    traces = torch.stack([result.abs_trace, result.rel_trace])
    if not bool((torch.isfinite(traces) & (traces >= 0)).all()):
        problems.append("traces are negative or non-finite on a contraction")
    if result.stop_mode != "rel" or result.tol != 1e-6:
        problems.append(f"stop_mode/tol recorded as {result.stop_mode!r}/{result.tol}")
    if problems:
        raise _fail(name, "record", "; ".join(problems))


def check_divergence(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """A residual that blows up (×1e10 per call of ``f``) is reported, not raised."""
    s = resolve(solver)
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(3, 16, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    growth = torch.ones((), dtype=dtype, device=device)

    def blowup(z: Tensor) -> Tensor:
        growth.mul_(1e10)  # overflows to inf within 31 calls in float64, 4 in float32
        return z + growth * u

    try:
        result = s(blowup, torch.zeros_like(u), max_iter=50, tol=1e-6, stop_mode="rel")
    except MonitorMisuse:
        raise  # a bug of its own, reported as such by `run_solver_check`
    except Exception as exc:
        raise _fail(_name(solver), "divergence", f"raised {type(exc).__name__}: {exc}") from exc
    if not bool((result.sample_status == 2).all()):
        raise _fail(_name(solver), "divergence", f"status {result.sample_status.tolist()}")
    if not bool(torch.isfinite(result.z).all()):
        raise _fail(_name(solver), "divergence", "the returned z is not finite")


def check_scale(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """``f_s(z) = s·f(z/s)`` at s = 1e-3 and 1e3 takes the same evaluations, within ±10%."""
    s = resolve(solver)
    f, c = _tanh(32, 0.95, dtype, device, seed=6)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    counts = {}
    for scale in (1.0, 1e-3, 1e3):

        def scaled(z: Tensor, scale: float = scale) -> Tensor:
            return f(z / scale) * scale

        result = s(scaled, torch.zeros_like(c), max_iter=400, tol=tol, stop_mode="rel")
        if not bool(result.converged.all()):
            raise _fail(_name(solver), "scale", f"scale {scale:g}: {result.message}")
        counts[scale] = result.nfe
    base = counts[1.0]
    if any(abs(n - base) > max(1, 0.1 * base) for n in counts.values()):
        raise _fail(_name(solver), "scale", f"evaluations at scale 1, 1e-3, 1e3: {counts}")


def check_tiny(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """``z = Jᵀz + v`` with ``v`` ≈ 1e-6 from zero: converges, and not to the zero start."""
    s = resolve(solver)
    f, v, answer = _affine(4, 48, 0.9, dtype, device, seed=7, scale=1e-6)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    result = s(f, torch.zeros_like(v), max_iter=400, tol=tol, stop_mode="rel")
    if not bool(result.converged.all()):
        raise _fail(_name(solver), "tiny", result.message)
    norms = torch.linalg.vector_norm(result.z, dim=1)
    if not bool((norms > 0.5 * torch.linalg.vector_norm(answer, dim=1)).all()):
        raise _fail(_name(solver), "tiny", f"returned norms {norms.tolist()}: the zero start?")
    err = _rel_error(result.z, answer)
    if not err <= 100 * tol / (1 - 0.9):
        raise _fail(_name(solver), "tiny", f"relative error {err:.2e}")


def check_per_sample(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """An easy sample beside a hard one stops earlier, with the right answer."""
    s = resolve(solver)
    dim = 32
    gen = torch.Generator().manual_seed(8)
    # Rotations scaled by ρ: every eigenvalue has modulus ρ, so Krylov-like methods (Anderson,
    # Broyden, GMRES) do little better than ρᵏ, and the hard sample needs many more steps.
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    rho = torch.tensor([0.2, 0.95], dtype=torch.float64)[:, None, None]
    a = rho * q
    b = torch.randn(2, dim, generator=gen, dtype=torch.float64)
    answer = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b)
    a, b, answer = (t.to(device=device, dtype=dtype) for t in (a, b, answer))

    def f(z: Tensor) -> Tensor:
        return torch.bmm(a, z[:, :, None]).squeeze(2) + b

    tol = _tol(dtype)
    result = s(f, torch.zeros_like(b), max_iter=1000, tol=tol, stop_mode="rel")
    easy, hard = result.nstep.tolist()
    if not result.converged[0]:
        raise _fail(
            _name(solver), "per_sample", f"the easy sample did not converge: {result.message}"
        )
    if not easy < hard:
        raise _fail(_name(solver), "per_sample", f"nstep easy {easy}, hard {hard}")
    err = _rel_error(result.z[0], answer[0])
    if not err <= 100 * tol:
        raise _fail(_name(solver), "per_sample", f"easy sample's relative error {err:.2e}")


def check_repeat(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Solves in a row with one instance are independent: no result is overwritten by the next
    solve, and the same problem solved again gives the same answer."""
    s = resolve(solver)
    tol = _tol(dtype)
    f, b, answer = _affine(4, 48, 0.8, dtype, device, seed=11)
    other, c, _ = _affine(4, 48, 0.8, dtype, device, seed=12)

    def solve(fn: Fn, start: Tensor) -> SolverResult:
        return s(fn, torch.zeros_like(start), max_iter=400, tol=tol, stop_mode="rel")

    first = solve(f, b)
    z = first.z.clone()
    solve(other, c)
    if not torch.equal(first.z, z):
        raise _fail(_name(solver), "repeat", "the next solve overwrote this one's result")
    again = solve(f, b)
    if again.nfe != first.nfe or not _rel_error(again.z, z) <= 1e-2 * tol:
        raise _fail(
            _name(solver),
            "repeat",
            f"solved again: {again.nfe} evaluations (first {first.nfe}), "
            f"relative difference {_rel_error(again.z, z):.2e}",
        )
    err = _rel_error(z, answer)
    if not err <= 100 * tol:
        raise _fail(_name(solver), "repeat", f"relative error {err:.2e}")


def check_reported(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """On ``f(z) = 3a − z`` from ``a`` (fixed-point iteration alternates between ``a`` and
    ``2a``, relative residuals 1/2 and 1), the returned ``z``'s recomputed residuals, absolute
    and relative, are the ones the result reports, after an even and an odd budget."""
    s = resolve(solver)
    gen = torch.Generator().manual_seed(13)
    a = torch.randn(3, 16, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

    def f(z: Tensor) -> Tensor:
        return 3 * a - z

    tol = _tol(dtype) * 1e-3  # out of reach of plain iteration; accelerators solve it exactly
    slack = 1e-3 if dtype == torch.float64 else 1e-2
    for max_iter in (20, 21):
        result = s(f, a.clone(), max_iter=max_iter, tol=tol, stop_mode="rel")
        true = torch.stack(_residuals(f, result.z))
        reported = torch.stack([result.abs_residual, result.rel_residual]).to(true.dtype)
        off = (true - reported).abs() > slack * torch.maximum(true, reported) + _tol(dtype)
        if bool(off.any()):
            i = int(off.any(0).nonzero()[0])
            raise _fail(
                _name(solver),
                "reported",
                f"max_iter = {max_iter}, sample {i}: the returned z has residuals (abs, rel) "
                f"{true[:, i].tolist()} where the result reports {reported[:, i].tolist()} "
                f"(best step {int(result.best_step[i])}): the result does not describe the z "
                "it returns; a solver on the monitor wrote into an observed z without "
                "monitor.release(z) first (rule 1)",
            )


def check_held(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Two samples whose residual grows tenfold per call of ``f`` diverge within a few calls;
    a contracting sample beside them keeps the solve going. From the evaluation at which a
    sample diverged, ``f`` must only see it at points it was already evaluated at."""
    s = resolve(solver)
    contract, b, _ = _affine(3, 16, 0.9, dtype, device, seed=14)
    gen = torch.Generator().manual_seed(15)
    u = torch.randn(3, 16, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    blows = torch.tensor([[True], [True], [False]], device=device)
    growth = torch.ones((), dtype=dtype, device=device)
    seen: list[Tensor] = []

    def f(z: Tensor) -> Tensor:
        seen.append(z.detach().clone())
        growth.mul_(10)  # overflows within 40 calls in float32: the contracting row is apart
        return torch.where(blows, z + growth * u, contract(z))

    result = s(f, torch.zeros_like(b), max_iter=60, tol=_tol(dtype), stop_mode="rel")
    name, status = _name(solver), result.sample_status.tolist()
    if status[:2] != [2, 2]:
        raise _fail(name, "held", f"status {status}: the growing samples did not diverge")
    for i in (0, 1):
        stop = int(result.nstep[i])  # the evaluation at which sample i diverged
        for call in range(stop + 1, len(seen)):
            row = seen[call][i]
            if not any(torch.equal(row, earlier[i]) for earlier in seen[:call]):
                raise _fail(
                    name,
                    "held",
                    f"sample {i} diverged at evaluation {stop}, but f saw it at a new point at "
                    f"evaluation {call}: pass each step through monitor.hold_diverged(step, z) "
                    "(rule 2)",
                )


CHECKS: dict[str, Check] = {
    "linear": check_linear,
    "budget": check_budget,
    "tolerance": check_tolerance,
    "record": check_record,
    "divergence": check_divergence,
    "scale": check_scale,
    "tiny": check_tiny,
    "per_sample": check_per_sample,
    "repeat": check_repeat,
    "reported": check_reported,
    "held": check_held,
}


def skipped_checks(solver: str | Solver) -> dict[str, str]:
    """The checks that do not apply to ``solver``, with the reason for each."""
    s = resolve(solver)
    skip = dict(getattr(type(s), "known_deviations", {}))
    if getattr(type(s), "affine_only", False):
        skip.update({c: "affine-only solver; the check's map is nonlinear" for c in NONLINEAR})
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"known_deviations names unknown checks: {sorted(unknown)}")
    return skip


def run_solver_check(
    solver: str | Solver, check: str, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Run one check by name (see `CHECKS`). A `MonitorMisuse` fails it, with its message."""
    with torch.no_grad():
        try:
            CHECKS[check](solver, dtype=dtype, device=device)
        except MonitorMisuse as exc:
            raise _fail(_name(solver), check, f"misused its monitor: {exc}") from exc


def check_solver(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> list[str]:
    """Run every check that applies; returns their names, or raises one AssertionError that
    lists every failure."""
    skip = skipped_checks(solver)
    failures, ran = [], []
    for check in CHECKS:
        if check in skip:
            continue
        try:
            run_solver_check(solver, check, dtype=dtype, device=device)
        except AssertionError as exc:
            failures.append(str(exc))
        ran.append(check)
    if failures:
        raise AssertionError("\n".join(failures))
    return ran


def solver_conformance_params(*names: str) -> list[Any]:
    """``pytest.param(name, check)`` for every check of every named solver; inapplicable ones
    are marked skipped with their reason."""
    import pytest  # only needed by this helper

    params = []
    for name in names:
        skip = skipped_checks(name)
        for check in CHECKS:
            marks = [pytest.mark.skip(reason=skip[check])] if check in skip else []
            params.append(pytest.param(name, check, id=f"{name}-{check}", marks=marks))
    return params


__all__ = [
    "CHECKS",
    "cell_problem",
    "check_budget",
    "check_divergence",
    "check_held",
    "check_linear",
    "check_per_sample",
    "check_record",
    "check_repeat",
    "check_reported",
    "check_scale",
    "check_solver",
    "check_tiny",
    "check_tolerance",
    "run_solver_check",
    "skipped_checks",
    "solver_conformance_params",
]
