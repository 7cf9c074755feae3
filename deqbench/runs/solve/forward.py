"""What one solve-only run measures: convergence, time against a bare loop, solver memory,
the spectral radius at the equilibrium and, when the run names an estimator, its gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deqbench.cell import Cell
from deqbench.deq import BoundCell, bind
from deqbench.measure.diagnostics import spectral_radius
from deqbench.measure.timing import LiveTensorMeter, median_iqr, time_interleaved
from deqbench.plugins import get_cell
from deqbench.report.schema import RunStatus
from deqbench.report.traces import trace_rows
from deqbench.solvers import Solver, Status
from deqbench.solvers.base import residual_norms
from deqbench.suite.solve import Problem, Run


@dataclass(eq=False)
class LiveProblem:
    """A problem instantiated on a device: its cell at fixed weights, input and bound map."""

    cell: Cell
    x: Tensor
    bound: BoundCell  #: f on flat states with the injection computed once, without a graph


def build_problem(
    problem: Problem, device: torch.device, dtype: torch.dtype, seed: int
) -> LiveProblem:
    """The cell at fixed (seeded) weights and a seeded input batch."""
    torch.manual_seed(seed)
    cell = get_cell(problem.cell, **problem.options).to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(problem.batch_size, *problem.input_shape, generator=gen, dtype=dtype)
    x = x.to(device)
    with torch.no_grad():
        bound = bind(cell, x)
    return LiveProblem(cell, x, bound)


def residuals(f, z: Tensor) -> tuple[Tensor, Tensor]:
    """(abs, rel) residuals of z, recomputed rather than taken from a solver's trace."""
    with torch.no_grad():
        return residual_norms(z, f(z))


def measure_solve(
    run: Run, prob: LiveProblem, solver: Solver, device: torch.device, repeats: int, warmup: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Solve ``run``'s problem, then time it against a bare loop and meter the solver's memory."""
    f, z0 = prob.bound.f, prob.bound.z0
    kwargs = {"max_iter": run.iter_cap, "tol": run.tol, "stop_mode": run.stop_mode}
    result = solver(f, z0, **kwargs)
    abs_r, rel_r = residuals(f, result.z)
    r = rel_r if run.stop_mode == "rel" else abs_r

    def bare() -> None:  # the same number of evaluations, with no solver around them
        with torch.no_grad():
            z = z0
            for _ in range(result.nfe):
                z = f(z)

    timings = time_interleaved(
        {"solve": lambda: solver(f, z0, **kwargs), "bare": bare},
        device,
        repeats=repeats,
        warmup=warmup,
    )
    meter = LiveTensorMeter()
    solver.workspace.clear()  # the meter must see the solver allocate the buffers it keeps
    with meter:
        solver(meter.exclude(f), z0, **kwargs)

    solve, bare_t = timings["solve"], timings["bare"]
    overhead, overhead_iqr = median_iqr(solve.ratios(bare_t))
    gen = torch.Generator(device=z0.device).manual_seed(0)
    metrics = {
        "state_dim": z0.shape[1],
        "status": RunStatus(result.status.value),
        "error": "" if result.status is Status.CONVERGED else result.message,
        "nfe": result.nfe,
        "nstep_median": float(result.nstep.float().median()),
        "converged_frac": float((r <= run.tol).float().mean()),
        "rel_residual_median": float(rel_r.median()),
        "rel_residual_max": float(rel_r.max()),
        "abs_residual_max": float(abs_r.max()),
        "solve_ms_median": solve.median_ms,
        "solve_ms_iqr": solve.iqr_ms,
        "bare_ms_median": bare_t.median_ms,
        "bare_ms_iqr": bare_t.iqr_ms,
        "overhead_per_nfe": overhead,
        "overhead_iqr": overhead_iqr,
        "solve_cost_f_evals": result.nfe * overhead,
        "solver_mem_mb": meter.peak_mb,
        "spectral_radius_median": float(spectral_radius(f, result.z, generator=gen).median()),
        "repeats": repeats,
    }
    return metrics, trace_rows(run.index, result)
