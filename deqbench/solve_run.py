"""What one solve-only run measures: convergence, time against a bare loop, solver memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deqbench.measure import LiveTensorMeter, time_interleaved
from deqbench.plugins import get_cell, get_solver
from deqbench.solvers import Solver, SolverResult
from deqbench.state import StateSpec, pack, unpack
from deqbench.suite import Problem, Run


@dataclass
class LiveProblem:
    """A problem instantiated on a device: the flat map f and its starting point."""

    f: Any
    z0: Tensor
    cell: torch.nn.Module
    injection: Any


def build_problem(
    problem: Problem, device: torch.device, dtype: torch.dtype, seed: int
) -> LiveProblem:
    """The cell at fixed weights, a seeded input batch, and f on flat states."""
    torch.manual_seed(seed)
    cell = get_cell(problem.cell, **problem.options).to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(problem.batch_size, *problem.input_shape, generator=gen, dtype=dtype)
    with torch.no_grad():
        cell.reset()
        injection = cell.inject(x.to(device))
        state = cell.init_state(injection)
    spec = StateSpec.of(state)

    def f(z: Tensor) -> Tensor:
        return pack(cell(unpack(z, spec), injection))

    return LiveProblem(f, pack(state), cell, injection)


def residuals(f, z: Tensor) -> tuple[Tensor, Tensor]:
    """(abs, rel) residuals of z, recomputed rather than taken from a solver's trace."""
    with torch.no_grad():
        fz = f(z)
        abs_r = torch.linalg.vector_norm(fz - z, dim=1)
        return abs_r, abs_r / torch.linalg.vector_norm(fz, dim=1).clamp_min(1e-30)


def trace_rows(run: int, result: SolverResult) -> list[dict[str, Any]]:
    a, r = result.abs_trace.float().cpu(), result.rel_trace.float().cpu()
    stats = [t.median(dim=1).values.tolist() for t in (a, r)] + [
        t.max(dim=1).values.tolist() for t in (a, r)
    ]
    return [
        {
            "run": run,
            "step": k,
            "abs_residual_median": stats[0][k],
            "abs_residual_max": stats[2][k],
            "rel_residual_median": stats[1][k],
            "rel_residual_max": stats[3][k],
        }
        for k in range(a.shape[0])
    ]


def measure_solve(
    run: Run, device: torch.device, dtype: torch.dtype, seed: int, repeats: int, warmup: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Solve ``run``'s problem, then time it against a bare loop and meter the solver's memory."""
    prob = build_problem(run.problem, device, dtype, seed)
    solver: Solver = get_solver(run.solver, **run.solver_options)
    kwargs = {"max_iter": run.max_iter, "tol": run.tol, "stop_mode": run.stop_mode}
    result = solver(prob.f, prob.z0, **kwargs)
    abs_r, rel_r = residuals(prob.f, result.z)
    r = rel_r if run.stop_mode == "rel" else abs_r

    def bare() -> None:  # the same number of evaluations, with no solver around them
        with torch.no_grad():
            z = prob.z0
            for _ in range(result.nfe):
                z = prob.f(z)

    timings = time_interleaved(
        {"solve": lambda: solver(prob.f, prob.z0, **kwargs), "bare": bare},
        device,
        repeats=repeats,
        warmup=warmup,
    )
    meter = LiveTensorMeter()
    with meter:
        solver(meter.exclude(prob.f), prob.z0, **kwargs)

    solve, bare_t = timings["solve"], timings["bare"]
    metrics = {
        "state_dim": prob.z0.shape[1],
        "status": result.status.value,
        "error": "" if result.status.value == "converged" else result.message,
        "nfe": result.nfe,
        "nstep_median": float(result.nstep.float().median()),
        "converged_frac": float((r <= run.tol).float().mean()),
        "rel_residual_median": float(rel_r.median()),
        "rel_residual_max": float(rel_r.max()),
        "abs_residual_max": float(abs_r.max()),
        "solve_ms_median": solve.median_ms,
        "solve_ms_iqr": solve.iqr_ms,
        "bare_ms_median": bare_t.median_ms,
        "overhead_per_nfe": solve.median_ms / bare_t.median_ms,
        "solver_mem_mb": meter.peak_mb,
        "repeats": repeats,
    }
    return metrics, trace_rows(run.index, result)
