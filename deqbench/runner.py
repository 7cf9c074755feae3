"""Executing a suite's runs one by one; each run ends as one result row, whatever happens."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deqbench.host_allocator import steady_thresholds
from deqbench.plugins import get_registry
from deqbench.results import FAILED, ReportWriter, metadata
from deqbench.solve_run import measure_run
from deqbench.suite import Run, Suite


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from deqbench.errors import ConfigError

        raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
    return torch.device(name)


@dataclass
class SuiteOutcome:
    """What a suite run produced."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(row["status"] in FAILED for row in self.rows)


def base_row(suite: Suite, run: Run, device: torch.device) -> dict[str, Any]:
    return {
        "run": run.index,
        "suite": suite.name,
        "problem": run.problem.name,
        "cell": run.problem.cell,
        "batch_size": run.problem.batch_size,
        "solver": run.solver,
        "solver_options": json.dumps(run.solver_options, sort_keys=True),
        "max_iter": run.max_iter,
        "tol": run.tol,
        "stop_mode": run.stop_mode,
        "gradient": run.gradient or "",
        "gradient_options": json.dumps(run.gradient_options, sort_keys=True)
        if run.gradient
        else "",
        "device": str(device),
        "dtype": suite.spec.suite.dtype,
    }


def execute(
    suite: Suite, run: Run, device: torch.device, references: dict[str, Any]
) -> tuple[dict, list[dict]]:
    """Measure one run; exceptions propagate to `run_suite`, which turns them into a status."""
    info = suite.spec.suite
    dtype = getattr(torch, info.dtype)
    return measure_run(run, device, dtype, info.seed, info.repeats, info.warmup, references)


def run_suite(
    suite: Suite,
    out: Path,
    device: torch.device,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SuiteOutcome:
    """Run every run of ``suite``, appending each row to ``out`` as soon as the run ends.

    A crash, an OOM or a diverging solver becomes a row with a status, and the suite goes on.
    Ctrl-C writes the run in progress as ``interrupted`` and stops. The first suite in a
    process fixes glibc's allocator thresholds for the rest of it (`steady_thresholds`), so
    that no run's timings depend on the runs before it.
    """
    threads = torch.get_num_threads()
    if suite.spec.suite.threads:
        torch.set_num_threads(suite.spec.suite.threads)
    try:
        return _run_all(suite, out, device, on_row)
    finally:
        torch.set_num_threads(threads)


def _run_all(
    suite: Suite,
    out: Path,
    device: torch.device,
    on_row: Callable[[dict[str, Any]], None] | None,
) -> SuiteOutcome:
    writer = ReportWriter(out)
    registry = get_registry()
    meta = metadata(registry.versions, registry.failures, device)
    meta.update(suite=suite.name, suite_file=str(suite.path), runs=len(suite.runs))
    meta["host_allocator"] = steady_thresholds()
    writer.write_meta(meta)
    outcome = SuiteOutcome(writer.path)
    references: dict[str, Any] = {}  # exact gradients, computed once per problem
    for run in suite.runs:
        row = base_row(suite, run, device)
        traces: list[dict] = []
        start = time.perf_counter()
        try:
            metrics, traces = execute(suite, run, device, references)
            row.update(metrics)
        except torch.OutOfMemoryError as exc:
            row.update(status="oom", error=_one_line(exc))
        except KeyboardInterrupt:
            row.update(status="interrupted", error="interrupted by the user")
            outcome.interrupted = True
        except Exception as exc:
            row.update(status="error", error=f"{type(exc).__name__}: {_one_line(exc)}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row["wall_s"] = time.perf_counter() - start
        writer.append(row, traces)
        outcome.rows.append(row)
        if on_row:
            on_row(row)
        if outcome.interrupted:
            break
    return outcome


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]
