"""A solver's convergence trace as the rows of a report's ``traces.csv``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deqbench.solvers import SolverResult

#: Convergence-trace columns: one row per run per forward solver step.
TRACE_COLUMNS: dict[str, str] = {
    "run": "index of the run (joins the result CSV)",
    "step": "iteration k; the residual is that of iterate z_k",
    "abs_residual_median": "median over samples of ‖f(z_k)−z_k‖",
    "abs_residual_max": "max over samples of ‖f(z_k)−z_k‖",
    "rel_residual_median": "median over samples of ‖f(z_k)−z_k‖/‖f(z_k)‖",
    "rel_residual_max": "max over samples of the relative residual",
}


def trace_rows(run: int, result: SolverResult) -> list[dict[str, Any]]:
    """The convergence trace as report rows: per step, median and max over the batch."""
    a, r = result.abs_trace.float().cpu(), result.rel_trace.float().cpu()
    a_med, r_med = a.median(dim=1).values.tolist(), r.median(dim=1).values.tolist()
    a_max, r_max = a.amax(dim=1).tolist(), r.amax(dim=1).tolist()
    return [
        {
            "run": run,
            "step": k,
            "abs_residual_median": a_med[k],
            "abs_residual_max": a_max[k],
            "rel_residual_median": r_med[k],
            "rel_residual_max": r_max[k],
        }
        for k in range(a.shape[0])
    ]
