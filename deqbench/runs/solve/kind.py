"""The solve kind of run: a registered solver (and optionally a gradient estimator) on one cell
at fixed weights, measured for convergence, time, memory and gradient accuracy."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deqbench.plugins import get_solver
from deqbench.report.schema import Metric, Row, RunStatus
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.kind import Job, RunKind, RunOutput
from deqbench.runs.solve.columns import COLUMNS
from deqbench.suite.solve import Run, Suite, SuiteFile, load_solve_suite, select, smoke

#: Identity columns of a solve report; two rows with equal values measured the same thing.
SOLVE_KEYS = (
    "problem",
    "cell",
    "batch_size",
    "solver",
    "solver_options",
    "max_iter",
    "smoke_max_iter",  # the smoke cap (--limit), when the report records it
    "tol",
    "stop_mode",
    "gradient",
    "gradient_options",
    "dtype",
)
SOLVE_METRICS = (
    Metric("nfe", "NFE"),
    Metric("solve_ms_median", "solve ms"),
    Metric("solve_cost_f_evals", "cost f-evals"),
    Metric("overhead_per_nfe", "×bare/NFE"),
    Metric("solver_mem_mb", "solver MB"),
    Metric("rel_residual_max", "rel res max", marked=False),  # below tol either way
    Metric("backward_ms_median", "bwd ms"),
    Metric("step_ms_median", "step ms"),
    Metric("saved_mb", "saved MB"),
)


class SolveKind(RunKind):
    """Solve runs: problems × solvers × the matrix's sweeps. A solve that diverges or stops
    at its cap is a measured outcome, not a failed run."""

    name = "solve"
    title = "solve"
    columns = COLUMNS
    companions = MappingProxyType({"traces.csv": TRACE_COLUMNS})
    keys = SOLVE_KEYS
    metrics = SOLVE_METRICS
    signature = frozenset({"status", "problem", "solver"})
    ok = frozenset({RunStatus.CONVERGED, RunStatus.MAX_ITER})
    smoke_options = MappingProxyType({"--limit": "limit", "--only": "only"})
    schema = SuiteFile

    def load(self, path: Path, data: dict[str, Any], registry: Any) -> Suite:
        return load_solve_suite(path, data, registry)

    def smoke(self, suite: Suite, limit: int | None = None, only: tuple[str, ...] = ()) -> Suite:
        if only:
            suite = select(suite, only)
        return smoke(suite, limit) if limit else suite

    def prepare(
        self, suite: Suite, *, device: Any, dist: Any, report: Path, finished: frozenset[int]
    ) -> dict:
        # Exact gradients, computed once per problem by its first gradient run (pickled when
        # runs are isolated: they cross process boundaries).
        return {}

    def identity(self, suite: Suite, run: Run, device: Any) -> Row:
        return {
            "run": run.index,
            "suite": suite.name,
            "problem": run.problem.name,
            "cell": run.problem.cell,
            "batch_size": run.problem.batch_size,
            "solver": run.solver,
            "solver_options": json.dumps(run.solver_options, sort_keys=True),
            "max_iter": run.max_iter,
            "smoke_max_iter": run.smoke_max_iter or "",
            "smoke": suite.smoke or "",
            "tol": run.tol,
            "stop_mode": run.stop_mode,
            "gradient": run.gradient or "",
            "gradient_options": json.dumps(run.gradient_options, sort_keys=True)
            if run.gradient
            else "",
            "device": str(device),
            "dtype": suite.spec.suite.dtype,
        }

    def execute(self, job: Job) -> RunOutput:
        import torch

        from deqbench.report.results import noisy_figures
        from deqbench.runs.solve.backward import measure_gradient, reference_on_cpu
        from deqbench.runs.solve.forward import build_problem, measure_solve

        run, info, device = job.run, job.suite.spec.suite, job.device
        if job.in_worker:  # the problem's exact gradient, if an earlier run computed it
            references = {key: pickle.loads(blob) for key, blob in (job.shared or {}).items()}
        else:
            references = job.shared if job.shared is not None else {}
        known = set(references)
        prob = build_problem(run.problem, device, getattr(torch, info.dtype), info.seed)
        solver = get_solver(run.solver, **run.solver_options)
        metrics, traces = measure_solve(run, prob, solver, device, info.repeats, info.warmup)
        if run.gradient:
            metrics.update(
                measure_gradient(run, prob, solver, device, info.repeats, info.warmup, references)
            )
        metrics["noisy"] = noisy_figures(metrics)
        output = RunOutput(metrics, {"traces.csv": traces})
        if job.in_worker:  # pickled here: a tensor would cross the pipe as this process's memory
            output.shared = {
                key: pickle.dumps(reference_on_cpu(ref))
                for key, ref in references.items()
                if key not in known
            }
        return output

    def for_worker(self, job: Job) -> Job:
        out = super().for_worker(job)
        key = job.run.problem.name
        out.shared = {key: job.shared[key]} if job.run.gradient and key in job.shared else {}
        return out

    def from_worker(self, job: Job, output: RunOutput) -> None:
        job.shared.update(output.shared or {})

    def summary(self, rows: list[Row]) -> list[Any]:
        from deqbench.report.tables import results_table

        return [results_table(rows)]

    def warnings(self, rows: list[Row]) -> list[str]:
        from deqbench.report.tables import NOISY_NOTE

        lines = [NOISY_NOTE] if any(row.get("noisy") for row in rows) else []
        diverged = sum(row["status"] == RunStatus.DIVERGED for row in rows)
        if diverged:  # a result, not a failure, but never unseen
            lines.append(
                f"{diverged} run(s) diverged: a solver's measured outcome, like max_iter, so "
                "not counted as a failed run; see the status column"
            )
        return lines


SOLVE = SolveKind()
