"""Executing a suite's runs one by one; each run ends as one result row, whatever happens.

One loop for every kind of run: the suite's `deqbench.runs.kind.RunKind` says what a run's row
holds and executes it; the loop decides where (this process or a worker of its own), turns
whatever happens into the row's status, and writes the row as soon as the run ends.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deqbench.execution import worker
from deqbench.execution.device import device_name
from deqbench.execution.distributed import SINGLE, Dist
from deqbench.execution.interrupt import DeferredInterrupt
from deqbench.measure import environment
from deqbench.measure.host_allocator import steady_thresholds
from deqbench.plugins import get_registry, get_run_kind, in_process_plugins
from deqbench.report.results import ReportWriter, metadata
from deqbench.report.schema import Row, RunStatus
from deqbench.runs.kind import Job, Observer, RunKind, RunOutput


@dataclass
class SuiteOutcome:
    """What a suite run produced."""

    path: Path
    kind: RunKind
    rows: list[Row] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        """Runs that failed (`deqbench.runs.kind.RunKind.is_failed`): the suite exits with 1."""
        return sum(self.kind.is_failed(row) for row in self.rows)


def run_suite(
    suite: Any,
    out: Path,
    device: torch.device,
    on_row: Callable[[Row], None] | None = None,
    observer: Observer | None = None,
    meta: dict[str, Any] | None = None,
    resume: Any = None,
    dist: Dist | None = None,
) -> SuiteOutcome:
    """Run every run of ``suite``, appending each row to ``out`` as soon as the run ends.

    ``meta`` adds keys to the report's ``meta.json`` (a share's `deqbench.execution.shard`
    keys). ``resume`` (a `deqbench.execution.resume.ResumePlan` of ``out``) skips the runs it
    has finished and lets the rest continue from their checkpoints. ``observer`` (the live
    display) follows each run's progress. ``dist`` is this process's
    `deqbench.execution.distributed.Dist` under torchrun: the ranks execute every run together
    and rank 0 writes the report.

    A crash, an OOM or a timeout becomes a row with a status, and the suite goes on. Ctrl-C
    writes the run in progress as ``interrupted`` and stops. The first suite in a process fixes
    glibc's allocator thresholds for the rest of it (`steady_thresholds`), so that no run's
    timings depend on the runs before it.
    """
    threads = torch.get_num_threads()
    if suite.spec.suite.threads:
        torch.set_num_threads(suite.spec.suite.threads)
    try:
        return _run_all(suite, out, device, on_row, observer, meta, resume, dist or SINGLE)
    finally:
        torch.set_num_threads(threads)


def _run_all(
    suite: Any,
    out: Path,
    device: torch.device,
    on_row: Callable[[Row], None] | None,
    observer: Observer | None,
    extra_meta: dict[str, Any] | None,
    resume: Any,
    dist: Dist,
) -> SuiteOutcome:
    kind = get_run_kind(suite.kind)
    finished = resume.finished if resume is not None else frozenset()
    writer = ReportWriter(out, kind)
    allocator = steady_thresholds()
    shared = kind.prepare(suite, device=device, dist=dist, report=writer.path, finished=finished)
    if dist.is_main:
        writer.write_meta(_meta(suite, kind, device, dist, allocator, extra_meta))
    outcome = SuiteOutcome(writer.path, kind)
    imported: set[str] = set()  # top-level modules the runs in workers imported
    with DeferredInterrupt() as sigint:
        for run in suite.runs:
            if run.index in finished:
                continue
            if sigint.pending:  # Ctrl-C between runs: every finished row is written
                outcome.interrupted = True
                break
            row = kind.identity(suite, run, device)
            job = Job(suite, run, device, writer.path, resume is not None, observer, dist, shared)
            start = time.perf_counter()
            # torchrun's ranks are processes already
            isolate = kind.settings(suite, run).isolate and not dist.enabled
            body = functools.partial(_isolated if isolate else _here, kind, job, row)
            output = _attempt(body, row, sigint, outcome, device)
            if output is not None:
                row.update(output.metrics)
                imported |= output.modules
            row["wall_s"] = time.perf_counter() - start
            if dist.is_main:
                writer.append(row, output.companions if output is not None else {})
                kind.finish(job, row)
            outcome.rows.append(row)
            if on_row:
                on_row(row)
            if outcome.interrupted:
                break
        outcome.interrupted = outcome.interrupted or sigint.pending
    if dist.is_main:  # `.meta.json`'s packages: what this process and the workers imported
        imported |= environment.top_level_modules()
        writer.update_meta(packages=environment.imported_packages(imported))
    return outcome


def _meta(
    suite: Any, kind: RunKind, device: torch.device, dist: Dist, allocator: Any, extra: Any
) -> dict[str, Any]:
    registry = get_registry()
    meta = metadata(registry.versions, registry.failures, device, device_name(device))
    meta.update(suite=suite.name, suite_file=str(suite.path), runs=len(suite.runs))
    meta.update(kind=kind.name, world_size=dist.world_size, host_allocator=allocator)
    if dist.enabled:
        meta["distributed"] = {"backend": dist.backend, "world_size": dist.world_size}
    meta.update(extra or {})
    return meta


def _here(kind: RunKind, job: Job, row: Row) -> RunOutput:
    """One run in this process (``isolate = false``, or a torch.distributed rank)."""
    return kind.execute(job)


def _isolated(kind: RunKind, job: Job, row: Row) -> RunOutput | None:
    """One run in a worker process of its own: its output, or None when the worker failed
    (timeout, crashed, oom, error), with the status and error written into ``row``."""
    observer = job.observer

    def on_event(event: tuple[str, Any]) -> None:
        name, payload = event
        if observer is None:
            return
        if name == "run_started":
            observer.run_started(job.run, payload)
        else:
            observer.progress(payload)

    info = kind.settings(job.suite, job.run)
    result = worker.run_isolated(
        execute_in_worker,
        (kind.name, kind.for_worker(job)),
        timeout_s=info.timeout,
        on_event=on_event,
        plugins=in_process_plugins(),
        threads=info.threads or torch.get_num_threads(),
    )
    if result.status != "ok":
        row.update(status=RunStatus(result.status), error=result.error)
        return None
    kind.from_worker(job, result.value)
    return result.value


class _EmitObserver:
    """Forwards a worker's observer calls to the suite's process as events."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit

    def run_started(self, run: Any, total_steps: int) -> None:
        self.emit(("run_started", total_steps))

    def progress(self, snapshot: dict[str, Any]) -> None:
        self.emit(("progress", snapshot))


def execute_in_worker(emit: Callable[[Any], None], kind_name: str, job: Job) -> RunOutput:
    """`RunKind.execute` as the target of `deqbench.execution.worker.run_isolated`."""
    job.observer = _EmitObserver(emit)
    job.in_worker = True
    output = get_run_kind(kind_name).execute(job)
    output.modules = environment.top_level_modules()
    return output


def _attempt(
    body: Callable[[], Any], row: Row, sigint: DeferredInterrupt, outcome: SuiteOutcome, device
) -> Any:
    """``body()``, the run itself, with Ctrl-C armed. An OOM, an exception or Ctrl-C becomes
    the row's status (and None is returned); the suite goes on, or stops after Ctrl-C."""
    try:
        sigint.armed = True
        if sigint.pending:  # Ctrl-C while this row was set up: the run never started
            raise KeyboardInterrupt
        return body()
    except torch.OutOfMemoryError as exc:
        row.update(status=RunStatus.OOM, error=_one_line(exc))
    except KeyboardInterrupt:
        row.update(status=RunStatus.INTERRUPTED, error="interrupted by the user")
        outcome.interrupted = True
    except Exception as exc:
        row.update(status=RunStatus.ERROR, error=f"{type(exc).__name__}: {_one_line(exc)}")
    finally:
        sigint.armed = False
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]
