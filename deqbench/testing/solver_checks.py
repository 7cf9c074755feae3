"""The checks of the solver conformance kit (`deqbench.testing.solvers` runs them, and lists
what each holds a solver to): plain functions that raise AssertionError saying what went
wrong."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deqbench.solvers.base import Fn, Solver, SolverResult
from deqbench.solvers.monitor import MonitorMisuse
from deqbench.testing.solver_problems import (
    affine,
    fail,
    name_of,
    rel_error,
    residuals,
    resolve,
    tanh_map,
    tol_for,
)


def check_linear(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Contractive affine maps (ρ = 0.5 and 0.9) converge to the exact fixed point."""
    s, tol = resolve(solver), tol_for(dtype)
    for rho in (0.5, 0.9):
        f, b, answer = affine(4, 32, rho, dtype, device, seed=1)
        result = s(f, torch.zeros_like(b), max_iter=500, tol=tol, stop_mode="rel")
        if not bool(result.converged.all()):
            raise fail(name_of(solver), "linear", f"ρ = {rho}: {result.message}")
        err = rel_error(result.z, answer)
        if not err <= 100 * tol / (1 - rho):
            raise fail(name_of(solver), "linear", f"ρ = {rho}: relative error {err:.2e}")


def check_budget(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """At most ``max_iter`` calls of ``f``, status ``max_iter`` when tol is out of reach."""
    s = resolve(solver)
    f, b, _ = affine(4, 64, 0.95, dtype, device, seed=2)
    for max_iter in (2, 5):
        calls = 0

        def counted(z: Tensor, f: Fn = f) -> Tensor:
            nonlocal calls
            calls += 1
            return f(z)

        result = s(counted, torch.zeros_like(b), max_iter=max_iter, tol=1e-30, stop_mode="rel")
        where = f"max_iter = {max_iter}"
        if calls > max_iter or result.nfe > max_iter:
            raise fail(name_of(solver), "budget", f"{where}: {calls} calls, nfe {result.nfe}")
        if result.nfe != calls:
            raise fail(name_of(solver), "budget", f"{where}: nfe {result.nfe} but {calls} calls")
        if not bool((result.sample_status == 1).all()):
            raise fail(
                name_of(solver), "budget", f"{where}: status {result.sample_status.tolist()}"
            )
        if not bool(torch.isfinite(result.z).all()):
            raise fail(name_of(solver), "budget", f"{where}: non-finite z")


def check_tolerance(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Converged samples meet tol at the returned ``z``; reported residuals are not too low."""
    s = resolve(solver)
    f, b, _ = affine(6, 32, 0.8, dtype, device, seed=3, scale=10.0)
    slack = 1e-3 if dtype == torch.float64 else 1e-2
    for mode, tol in (("rel", 1e-4), ("abs", 1e-3)):
        result = s(f, torch.zeros_like(b), max_iter=200, tol=tol, stop_mode=mode)
        abs_r, rel_r = residuals(f, result.z)
        true = rel_r if mode == "rel" else abs_r
        reported = result.rel_residual if mode == "rel" else result.abs_residual
        ok = result.converged
        if not bool(ok.any()):
            raise fail(name_of(solver), "tolerance", f"{mode}: nothing converged: {result.message}")
        if not bool((true[ok] <= tol * (1 + slack)).all()):
            raise fail(
                name_of(solver),
                "tolerance",
                f"{mode}: converged with residual {true[ok].max():.3e}",
            )
        if not bool((true <= reported * (1 + slack) + 1e-30).all()):
            raise fail(
                name_of(solver),
                "tolerance",
                f"{mode}: reports {reported.tolist()} where the returned z has {true.tolist()}",
            )


def check_record(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Shapes, dtypes and counts of the result record agree with each other."""
    s = resolve(solver)
    f, b, _ = affine(5, 16, 0.7, dtype, device, seed=4)
    z0 = torch.zeros_like(b)
    result = s(f, z0, max_iter=30, tol=1e-6, stop_mode="rel")
    name, batch = name_of(solver), b.shape[0]
    problems = []
    if not isinstance(result, SolverResult):
        raise fail(name, "record", f"returned {type(result).__name__}, not a SolverResult")
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
        raise fail(name, "record", "; ".join(problems))


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
        raise fail(name_of(solver), "divergence", f"raised {type(exc).__name__}: {exc}") from exc
    if not bool((result.sample_status == 2).all()):
        raise fail(name_of(solver), "divergence", f"status {result.sample_status.tolist()}")
    if not bool(torch.isfinite(result.z).all()):
        raise fail(name_of(solver), "divergence", "the returned z is not finite")


def check_scale(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """``f_s(z) = s·f(z/s)`` at s = 1e-3 and 1e3 takes the same evaluations, within ±10%."""
    s = resolve(solver)
    f, c = tanh_map(32, 0.95, dtype, device, seed=6)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    counts = {}
    for scale in (1.0, 1e-3, 1e3):

        def scaled(z: Tensor, scale: float = scale) -> Tensor:
            return f(z / scale) * scale

        result = s(scaled, torch.zeros_like(c), max_iter=400, tol=tol, stop_mode="rel")
        if not bool(result.converged.all()):
            raise fail(name_of(solver), "scale", f"scale {scale:g}: {result.message}")
        counts[scale] = result.nfe
    base = counts[1.0]
    if any(abs(n - base) > max(1, 0.1 * base) for n in counts.values()):
        raise fail(name_of(solver), "scale", f"evaluations at scale 1, 1e-3, 1e3: {counts}")


def check_tiny(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """``z = Jᵀz + v`` with ``v`` ≈ 1e-6 from zero: converges, and not to the zero start."""
    s = resolve(solver)
    f, v, answer = affine(4, 48, 0.9, dtype, device, seed=7, scale=1e-6)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    result = s(f, torch.zeros_like(v), max_iter=400, tol=tol, stop_mode="rel")
    if not bool(result.converged.all()):
        raise fail(name_of(solver), "tiny", result.message)
    norms = torch.linalg.vector_norm(result.z, dim=1)
    if not bool((norms > 0.5 * torch.linalg.vector_norm(answer, dim=1)).all()):
        raise fail(name_of(solver), "tiny", f"returned norms {norms.tolist()}: the zero start?")
    err = rel_error(result.z, answer)
    if not err <= 100 * tol / (1 - 0.9):
        raise fail(name_of(solver), "tiny", f"relative error {err:.2e}")


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

    tol = tol_for(dtype)
    result = s(f, torch.zeros_like(b), max_iter=1000, tol=tol, stop_mode="rel")
    easy, hard = result.nstep.tolist()
    if not result.converged[0]:
        raise fail(
            name_of(solver), "per_sample", f"the easy sample did not converge: {result.message}"
        )
    if not easy < hard:
        raise fail(name_of(solver), "per_sample", f"nstep easy {easy}, hard {hard}")
    err = rel_error(result.z[0], answer[0])
    if not err <= 100 * tol:
        raise fail(name_of(solver), "per_sample", f"easy sample's relative error {err:.2e}")


def check_repeat(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Solves in a row with one instance are independent: no result is overwritten by the next
    solve, and the same problem solved again gives the same answer."""
    s = resolve(solver)
    tol = tol_for(dtype)
    f, b, answer = affine(4, 48, 0.8, dtype, device, seed=11)
    other, c, _ = affine(4, 48, 0.8, dtype, device, seed=12)

    def solve(fn: Fn, start: Tensor) -> SolverResult:
        return s(fn, torch.zeros_like(start), max_iter=400, tol=tol, stop_mode="rel")

    first = solve(f, b)
    z = first.z.clone()
    solve(other, c)
    if not torch.equal(first.z, z):
        raise fail(name_of(solver), "repeat", "the next solve overwrote this one's result")
    again = solve(f, b)
    if again.nfe != first.nfe or not rel_error(again.z, z) <= 1e-2 * tol:
        raise fail(
            name_of(solver),
            "repeat",
            f"solved again: {again.nfe} evaluations (first {first.nfe}), "
            f"relative difference {rel_error(again.z, z):.2e}",
        )
    err = rel_error(z, answer)
    if not err <= 100 * tol:
        raise fail(name_of(solver), "repeat", f"relative error {err:.2e}")


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

    # Out of reach of plain iteration; accelerators solve it exactly.
    tol = tol_for(dtype) * 1e-3
    slack = 1e-3 if dtype == torch.float64 else 1e-2
    for max_iter in (20, 21):
        result = s(f, a.clone(), max_iter=max_iter, tol=tol, stop_mode="rel")
        true = torch.stack(residuals(f, result.z))
        reported = torch.stack([result.abs_residual, result.rel_residual]).to(true.dtype)
        off = (true - reported).abs() > slack * torch.maximum(true, reported) + tol_for(dtype)
        if bool(off.any()):
            i = int(off.any(0).nonzero()[0])
            raise fail(
                name_of(solver),
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
    contract, b, _ = affine(3, 16, 0.9, dtype, device, seed=14)
    gen = torch.Generator().manual_seed(15)
    u = torch.randn(3, 16, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    blows = torch.tensor([[True], [True], [False]], device=device)
    growth = torch.ones((), dtype=dtype, device=device)
    seen: list[Tensor] = []

    def f(z: Tensor) -> Tensor:
        seen.append(z.detach().clone())
        growth.mul_(10)  # overflows within 40 calls in float32: the contracting row is apart
        return torch.where(blows, z + growth * u, contract(z))

    result = s(f, torch.zeros_like(b), max_iter=60, tol=tol_for(dtype), stop_mode="rel")
    name, status = name_of(solver), result.sample_status.tolist()
    if status[:2] != [2, 2]:
        raise fail(name, "held", f"status {status}: the growing samples did not diverge")
    for i in (0, 1):
        stop = int(result.nstep[i])  # the evaluation at which sample i diverged
        for call in range(stop + 1, len(seen)):
            row = seen[call][i]
            if not any(torch.equal(row, earlier[i]) for earlier in seen[:call]):
                raise fail(
                    name,
                    "held",
                    f"sample {i} diverged at evaluation {stop}, but f saw it at a new point at "
                    f"evaluation {call}: pass each step through monitor.hold_diverged(step, z) "
                    "(rule 2)",
                )
