"""Executing a suite's runs one by one; each run ends as one result row, whatever happens."""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deqbench.host_allocator import steady_thresholds
from deqbench.plugins import get_registry
from deqbench.results import ReportWriter, is_failed, metadata, noisy_figures
from deqbench.solve_run import measure_run
from deqbench.suite import Run, Suite

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one; anything but cpu, cuda, cuda:N and auto, or CUDA
    without one, is a clear `ConfigError`."""
    from deqbench.errors import ConfigError, did_you_mean

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        hint = did_you_mean(name, ("auto", "cpu", "cuda"))
        hint = hint if "did you mean" in hint else ""
        raise ConfigError(f"device {name!r}: expected one of {', '.join(DEVICES)}{hint}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(name)


class DeferredInterrupt:
    """Ctrl-C (SIGINT) raises only while `armed` (inside a run); elsewhere (writing a row,
    the progress bar) it is noted in `pending` and acted on once the row is safely written.

    The first interrupt disarms, so it is recorded once; a second Ctrl-C kills any run worker
    and exits at once with code 130 (rows are written whole, so none is cut). Off the main
    thread (where Python cannot take signals) it does nothing, and Ctrl-C behaves as before.
    """

    def __init__(self) -> None:
        self.armed = False
        self.pending = False
        self.taken = False  #: a Ctrl-C was had; the next one exits at once
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.taken:  # a second Ctrl-C: leave now (rows are written whole, see results)
            from deqbench.worker import kill_live_workers

            kill_live_workers()
            os._exit(130)
        self.taken = True
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class SuiteOutcome:
    """What a suite run produced."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        """Runs that failed (`deqbench.results.is_failed`): the suite exits with 1."""
        return sum(is_failed(row) for row in self.rows)


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
        "smoke_max_iter": run.smoke_max_iter or "",
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


def solve_in_worker(
    emit: Any, suite: Suite, run: Run, device: str, shared: dict[str, bytes] | None = None
) -> tuple[dict, list[dict], dict[str, bytes]]:
    """`execute` as the target of `deqbench.worker.run_isolated` (``[suite] isolate``).

    ``shared``: the exact gradients the suite already has for this run's problem, pickled.
    Returns ``(metrics, traces, new)``, ``new`` the exact gradients this run computed, pickled
    on the CPU, for the suite to hand to the problem's later runs. (Pickled here: the result
    pipe would send a tensor as a descriptor of this process's memory, gone once it exits.)
    """
    from deqbench.gradient_run import reference_on_cpu

    references = {key: pickle.loads(blob) for key, blob in (shared or {}).items()}
    known = set(references)
    metrics, traces = execute(suite, run, torch.device(device), references)
    new = {
        key: pickle.dumps(reference_on_cpu(ref))
        for key, ref in references.items()
        if key not in known
    }
    return metrics, traces, new


def _solve_isolated(
    suite: Suite, run: Run, device: torch.device, row: dict, references: dict[str, Any]
) -> tuple[dict, list[dict]]:
    """One solve run in its own worker: `execute`'s ``(metrics, traces)``, or, when the worker
    failed (timeout, crashed, oom, error), its status and error written into ``row``.

    ``references`` (the suite's exact gradients by problem, pickled) goes to the worker for
    this run's problem, and takes what the worker computed: one exact gradient per problem, as
    in-process.
    """
    from deqbench.plugins import in_process_plugins
    from deqbench.worker import run_isolated

    info = suite.spec.suite
    key = run.problem.name
    shared = {key: references[key]} if run.gradient and key in references else {}
    result = run_isolated(
        solve_in_worker,
        (suite, run, str(device), shared),
        timeout_s=info.timeout,
        plugins=in_process_plugins(),
        threads=info.threads or torch.get_num_threads(),
    )
    if result.status == "ok":
        metrics, traces, new = result.value
        references.update(new)
        return metrics, traces
    row.update(status=result.status, error=result.error)
    return {}, []


def run_suite(
    suite: Suite,
    out: Path,
    device: torch.device,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    observer: Any = None,
    meta: dict[str, Any] | None = None,
    resume: Any = None,
    ctx: Any = None,
) -> SuiteOutcome:
    """Run every run of ``suite``, appending each row to ``out`` as soon as the run ends.
    ``meta`` adds keys to the report's ``meta.json`` (a share's `deqbench.shard.share_meta`).
    ``resume`` (a `deqbench.resume.ResumePlan` of ``out``) skips the runs it has finished.
    ``ctx`` is this process's `deqbench.distributed.Dist` under torchrun (training suites).

    Training suites (``kind = "train"``) go through `_run_train_all`; ``observer`` (a
    `deqbench.train_run.Observer`, e.g. the live display) follows their steps.

    A crash, an OOM or a diverging solver becomes a row with a status, and the suite goes on.
    Ctrl-C writes the run in progress as ``interrupted`` and stops. The first suite in a
    process fixes glibc's allocator thresholds for the rest of it (`steady_thresholds`), so
    that no run's timings depend on the runs before it.
    """
    threads = torch.get_num_threads()
    if suite.spec.suite.threads:
        torch.set_num_threads(suite.spec.suite.threads)
    try:
        if getattr(suite, "kind", "solve") == "train":
            return _run_train_all(suite, out, device, on_row, observer, meta, resume, ctx)
        return _run_all(suite, out, device, on_row, meta, resume)
    finally:
        torch.set_num_threads(threads)


def _run_all(
    suite: Suite,
    out: Path,
    device: torch.device,
    on_row: Callable[[dict[str, Any]], None] | None,
    extra_meta: dict[str, Any] | None = None,
    resume: Any = None,
) -> SuiteOutcome:
    writer = ReportWriter(out)
    finished = resume.finished if resume is not None else frozenset()
    registry = get_registry()
    meta = metadata(registry.versions, registry.failures, device)
    meta.update(suite=suite.name, suite_file=str(suite.path), runs=len(suite.runs))
    meta["host_allocator"] = steady_thresholds()
    meta.update(extra_meta or {})
    writer.write_meta(meta)
    outcome = SuiteOutcome(writer.path)
    # Exact gradients, computed once per problem (pickled, when runs are isolated).
    references: dict[str, Any] = {}
    with DeferredInterrupt() as sigint:
        for run in suite.runs:
            if run.index in finished:
                continue
            if sigint.pending:  # Ctrl-C between runs: every finished row is written
                outcome.interrupted = True
                break
            row = base_row(suite, run, device)
            start = time.perf_counter()
            if suite.spec.suite.isolate:
                solve = functools.partial(_solve_isolated, suite, run, device, row, references)
            else:
                solve = functools.partial(execute, suite, run, device, references)
            metrics, traces = _attempt(solve, row, sigint, outcome, device) or ({}, [])
            row.update(metrics)
            row["wall_s"] = time.perf_counter() - start
            row["noisy"] = noisy_figures(row)
            writer.append(row, traces)
            outcome.rows.append(row)
            if on_row:
                on_row(row)
            if outcome.interrupted:
                break
        outcome.interrupted = outcome.interrupted or sigint.pending
    return outcome


def _run_train_all(
    suite: Any,
    out: Path,
    device: torch.device,
    on_row: Callable[[dict[str, Any]], None] | None,
    observer: Any,
    extra_meta: dict[str, Any] | None = None,
    resume: Any = None,
    ctx: Any = None,
) -> SuiteOutcome:
    """The training runs one by one, each ending as one row (and its step and trace rows).

    Each distinct dataset is built once before anything trains, so a missing data root stops
    the suite at once with its `DatasetError` rather than failing every run. Each run trains
    in a worker process of its own (``[suite] isolate``, `deqbench.worker`), where a timeout,
    a crash or the kernel's OOM killer ends that run alone; under torch.distributed (``ctx``)
    the ranks train in their own processes, rank 0 writes the report. ``resume`` (a
    `deqbench.resume.ResumePlan`) skips the runs a report already has and continues the rest
    from their checkpoints.
    """
    from deqbench.checkpoint import checkpoint_path, remove_checkpoint
    from deqbench.distributed import SINGLE
    from deqbench.train_run import build_source, identity

    ctx = ctx or SINGLE
    sources: dict[str, Any] = {}
    for run in suite.runs:
        if _source_key(run) not in sources:
            sources[_source_key(run)] = build_source(run)
    writer = ReportWriter(out, kind="train")
    if ctx.is_main:
        registry = get_registry()
        meta = metadata(registry.versions, registry.failures, device)
        meta.update(suite=suite.name, suite_file=str(suite.path), runs=len(suite.runs))
        meta.update(kind="train", world_size=ctx.world_size)
        if ctx.enabled:
            meta["distributed"] = {"backend": ctx.backend, "world_size": ctx.world_size}
        meta.update(extra_meta or {})
        writer.write_meta(meta)
    outcome = SuiteOutcome(writer.path)
    finished = resume.finished if resume is not None else frozenset()
    if ctx.is_main and not suite.spec.suite.keep_checkpoints:
        for index in finished:  # a kill between a row and its checkpoint's removal left one
            remove_checkpoint(checkpoint_path(writer.path, index))
    with DeferredInterrupt() as sigint:
        for run in suite.runs:
            if run.index in finished:
                continue
            if sigint.pending:  # Ctrl-C between runs: every finished row is written
                outcome.interrupted = True
                break
            row = identity(suite.name, run, device)
            info = run.spec.suite
            ckpt = checkpoint_path(writer.path, run.index) if info.checkpoint else None
            start = time.perf_counter()
            if info.isolate and not ctx.enabled:
                again = resume is not None
                train = functools.partial(
                    _train_isolated, run, device, writer.path, ckpt, again, observer, row
                )
            else:
                source = sources[_source_key(run)]
                train = functools.partial(
                    _train_here, run, device, source, writer.path, ckpt, resume, observer, ctx
                )
            result = _attempt(train, row, sigint, outcome, device)
            steps: list[dict] = []
            traces: list[dict] = []
            if result is not None:
                row.update(result.metrics)
                steps, traces = result.steps, result.traces
            row["wall_s"] = time.perf_counter() - start
            if ctx.is_main:
                writer.append(row, traces, steps)
                final = row["status"] != "interrupted"  # resuming skips this run from now on
                if ckpt is not None and final and not info.keep_checkpoints:
                    remove_checkpoint(ckpt)
            outcome.rows.append(row)
            if on_row:
                on_row(row)
            if outcome.interrupted:
                break
        outcome.interrupted = outcome.interrupted or sigint.pending
    return outcome


def _source_key(run: Any) -> str:
    """Runs whose datasets differ only in batch sizes share one data source."""
    return run.spec.dataset.model_dump_json(exclude={"batch_size", "eval_batch_size"})


def _train_here(run, device, source, report, ckpt, resume, observer, ctx) -> Any:
    """One training run in this process (``isolate = false``, or a torch.distributed rank)."""
    from deqbench.train_run import train_run

    return train_run(
        run,
        device,
        observer=observer if ctx.is_main else None,
        source=source,
        report=report,
        ctx=ctx,
        checkpoint=ckpt,
        resume=resume is not None,
        timeout_s=run.spec.suite.timeout,  # between steps: no worker to kill here
    )


def _train_isolated(run, device, report, ckpt, resume: bool, observer, row: dict) -> Any:
    """One training run in its own worker process: its `RunOutput`, or None when the worker
    failed (timeout, crashed, oom, error), with its status and error written into ``row``."""
    from deqbench.plugins import in_process_plugins
    from deqbench.train_run import train_in_worker
    from deqbench.worker import run_isolated

    def on_event(event: tuple[str, Any]) -> None:
        if observer is None:
            return
        kind, payload = event
        if kind == "run_started":
            observer.run_started(run, payload)
        else:
            observer.progress(payload)

    args = (run, str(device), str(report), str(ckpt) if ckpt else None, resume)
    result = run_isolated(
        train_in_worker,
        args,
        timeout_s=run.spec.suite.timeout,
        on_event=on_event,
        plugins=in_process_plugins(),
        threads=run.spec.suite.threads,
    )
    if result.status == "ok":
        return result.value
    row.update(status=result.status, error=result.error)
    return None


def _attempt(
    body: Callable[[], Any], row: dict, sigint: DeferredInterrupt, outcome: SuiteOutcome, device
) -> Any:
    """``body()``, the run itself, with Ctrl-C armed. An OOM, an exception or Ctrl-C becomes
    the row's status (and None is returned); the suite goes on, or stops after Ctrl-C."""
    try:
        sigint.armed = True
        if sigint.pending:  # Ctrl-C while this row was set up: the run never started
            raise KeyboardInterrupt
        return body()
    except torch.OutOfMemoryError as exc:
        row.update(status="oom", error=_one_line(exc))
    except KeyboardInterrupt:
        row.update(status="interrupted", error="interrupted by the user")
        outcome.interrupted = True
    except Exception as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {_one_line(exc)}")
    finally:
        sigint.armed = False
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]
