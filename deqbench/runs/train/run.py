"""One training run: seed, build, train with the recipe, evaluate, and end as one report row.

The run is a function over a small `TrainState` (model, optimizer, scheduler, grad scaler and
the step/epoch counters), so it can be checkpointed and resumed as a whole. The per-step work
of the harness stays off the critical path: losses, residuals and convergence flags are kept
as device tensors in a `StepLog` and read back only when it is drained, at a display refresh
(every ``refresh_s``) and at the end, so there is no host sync between refreshes.

The parts: `deqbench.runs.train.build` (seeding, data source, model, state),
`deqbench.runs.train.batches` (the loaders), `deqbench.runs.train.loop` (the training loop and
evaluation, as `deqbench.runs.train.settings.LoopSettings` say), `deqbench.runs.train.steplog`
and `deqbench.runs.train.snapshot` (checkpoints).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deqbench.data import DataSource
from deqbench.errors import ConfigError
from deqbench.execution.distributed import SINGLE, Dist, reduce_metrics, wrap_model
from deqbench.measure.timing import MB, median_iqr, peak_rss_mb
from deqbench.models import parameter_count
from deqbench.report.reference import reproduced
from deqbench.report.schema import RunStatus
from deqbench.runs.train.batches import build_batches
from deqbench.runs.train.build import (
    build_model,
    build_source,
    build_state,
    seed_everything,
    total_steps,
)
from deqbench.runs.train.logs import closed_on_error, end_loggers, open_loggers
from deqbench.runs.train.loop import Clock, Observer, OutOfTime, evaluate, train
from deqbench.runs.train.settings import LoopSettings
from deqbench.runs.train.snapshot import restore_snapshot
from deqbench.runs.train.steplog import Diverged, StepLog
from deqbench.runs.train.sweep import sweep
from deqbench.runs.train.target import Target, check_target
from deqbench.runs.train.weights import load_weights
from deqbench.suite.duration import format_duration
from deqbench.suite.train import TrainRun
from deqbench.suite.train_tables import REFERENCE_METRICS


@dataclass
class RunOutput:
    """What one training run produced: its row's measurements, step rows and trace rows."""

    metrics: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)  #: wall time of each step, in order
    evals: list[dict[str, Any]] = field(default_factory=list)  #: ``[eval] sweep`` rows


def identity(suite_name: str, run: TrainRun, device: torch.device) -> dict[str, Any]:
    """The identity columns of a run's row (filled before it starts, so a failed run has them)."""
    spec = run.spec
    deq = spec.deq
    return {
        "run": run.index,
        "suite": suite_name,
        "kind": "train",
        "model": spec.model.name,
        "head": spec.model.head,
        "dataset": spec.dataset.name,
        "image_size": spec.dataset.image_size,
        "batch_size": spec.dataset.batch_size,
        "solver": deq.solver,
        "solver_options": _json(deq.solver_options),
        "gradient": deq.gradient,
        "gradient_options": _json(deq.gradient_options),
        "f_max_iter": deq.f_max_iter,
        "f_tol": deq.f_tol,
        "b_max_iter": deq.b_max_iter,
        "model_options": _json(spec.model.options),
        "weights": spec.model.weights or None,
        "options": _json(run.options),
        "seed": run.seed,
        "precision": spec.recipe.precision,
        "max_steps": run.max_steps,
        "device": str(device),
        **spec.reference.columns(),
        "reproduced": reproduced(spec.reference.columns()),  # "no" until the run completes
    }


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


EXPLICIT_BLANK = ("solver", "solver_options", "gradient", "gradient_options")
EXPLICIT_BLANK += ("f_max_iter", "f_tol", "b_max_iter")


def train_run(
    run: TrainRun,
    device: torch.device,
    observer: Observer | None = None,
    refresh_s: float = 0.5,
    source: DataSource | None = None,
    report: str | Path | None = None,
    dist: Dist = SINGLE,
    checkpoint: Path | None = None,
    resume: bool = False,
    timeout_s: float | None = None,
) -> RunOutput:
    """Seed, build, train, evaluate. A NaN loss ends the run as ``diverged`` (its steps so far
    kept); other exceptions propagate to the suite runner, which records them.

    ``checkpoint`` is where the run checkpoints (every ``[suite] checkpoint_every`` steps and
    at each epoch end; None: never); with ``resume`` the run continues from it when it exists.
    ``timeout_s`` ends the run as ``timeout`` at the first step past it (counted from here).
    Under torch.distributed (``dist``) the batch is split over the ranks, the model trains in
    DDP, and the row's figures are combined over the ranks (`deqbench.execution.distributed`).

    With a ``report`` path, the loggers that ``[logging] loggers`` selects (TensorBoard, W&B,
    MLflow, a plugin's: `deqbench.loggers`) get the run's config, its step rows, each
    evaluation and its final row, on the main rank (`deqbench.runs.train.logs`).
    """
    deadline = time.perf_counter() + timeout_s if timeout_s else None
    out = RunOutput()
    m = out.metrics
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_everything(run.seed)
    source = source or build_source(run)
    info = source.info
    model = build_model(run, source, device)
    if model.task != info.task:
        raise ConfigError(
            f"model {run.spec.model.name!r} is a {model.task} model, dataset "
            f"{run.spec.dataset.name!r} a {info.task} dataset"
        )
    if run.spec.model.weights:  # before any checkpoint of this run restores its own
        load_weights(model, run.spec.model.weights, run.spec.model.weights_format)
    if dist.rank:  # the same initial weights on every rank, then each rank its own draws
        seed_everything(run.seed + 7919 * dist.rank)
    m["params"] = parameter_count(model)
    if not model.implicit:
        m.update(dict.fromkeys(EXPLICIT_BLANK, None))
    batches, eval_loader = build_batches(run, source, device, dist)
    steps = total_steps(run, batches.per_epoch)
    state = build_state(run, model, steps)
    state.target = Target.of(run.spec.eval, info.task)  # before a checkpoint restores it
    figure = run.spec.reference.figure()
    if figure is not None and REFERENCE_METRICS[figure[0]][1] != info.task:
        need = REFERENCE_METRICS[figure[0]][1]
        raise ConfigError(f"reference.{figure[0]}: a {need} metric, but the run is for {info.task}")
    log = StepLog(device, dist=dist)
    times = {"train_s": 0.0, "eval_s": 0.0}  # before this process took over (resume)
    if resume and checkpoint is not None and checkpoint.exists():
        times = restore_snapshot(checkpoint, state=state, log=log, batches=batches, dist=dist)
        m["resumed_from_step"] = state.step
    settings = LoopSettings.from_run(
        run,
        steps=steps,
        implicit=model.implicit,
        checkpoint=checkpoint,
        refresh_s=refresh_s,
        deadline=deadline,
    )
    state.net = wrap_model(model, dist, device, warmup=settings.warmup > state.step)
    if observer is not None:
        observer.run_started(run, steps)
    clock = Clock(train_s=times["train_s"], eval_s=times["eval_s"], check_s=log.check_s)
    logger = open_loggers(run, report, dist)  # None: none selected, or not the main rank
    log.on_row = logger.log_step if logger is not None else None
    with closed_on_error(logger):  # a run that raises closes its loggers first
        try:
            extra = train(
                state,
                settings=settings,
                batches=batches,
                eval_loader=eval_loader,
                info=info,
                log=log,
                clock=clock,
                dist=dist,
                observer=observer,
                logger=logger,
            )
            m.update(extra)
            m["status"] = RunStatus.COMPLETED
        except Diverged as exc:
            m.update(status=RunStatus.DIVERGED, error=str(exc))
        except OutOfTime as exc:
            limit = f"{format_duration(timeout_s)} ({timeout_s:g} s)"
            m.update(status=RunStatus.TIMEOUT, error=f"exceeded its timeout of {limit} {exc}")
        finally:
            train_s = clock.elapsed(log)["train_s"]
            out.steps = [{"run": run.index, **row} for row in log.rows]
            out.step_ms = [ms for _, ms, _ in log.step_ms]
        _summarise(m, log, train_s, run.spec.dataset.batch_size, batches.per_epoch)
        if m["status"] == RunStatus.COMPLETED:
            start = time.perf_counter()
            result, out.traces = evaluate(
                state,
                eval_loader,
                info,
                settings=settings,
                dist=dist,
                paths=settings.path_independence,
            )
            eval_s = clock.eval_s + clock.interim_eval_s + time.perf_counter() - start
            check_target(state.target, result, state.step, {"train_s": train_s, "eval_s": eval_s})
            m.update(result, eval_s=eval_s)
            if logger is not None:
                logger.log_eval(state.step, result)
            # [eval] sweep: the trained model at other forward settings (not in train_s)
            out.evals = sweep(state, eval_loader, info, settings=settings, dist=dist)
    if state.target is not None:  # reached or not, also for a run that failed after it
        m.update(state.target.columns())
    if device.type == "cuda":
        m["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / MB
    m["rss_peak_mb"] = run_peak_rss_mb()
    m["world_size"] = dist.world_size
    reduce_metrics(m, dist)
    m["reproduced"] = reproduced(run.spec.reference.columns() | m)  # on the final evaluation
    end_loggers(logger, identity(run.spec.suite.name, run, device) | m)
    return out


def _summarise(m: dict[str, Any], log: StepLog, train_s: float, batch: int, per_epoch: int) -> None:
    """The row's training figures, from the drained step log, into ``m``."""
    rows = log.rows
    m["steps_done"] = len(rows)
    m["epochs_done"] = len(rows) / per_epoch if per_epoch else None
    m["unrolled_steps"] = sum(r["mode"] == "unrolled" for r in rows)
    m["equilibrium_steps"] = len(rows) - m["unrolled_steps"]
    m["train_loss_final"] = rows[-1]["loss"] if rows else None
    m["train_s"] = train_s
    m["images_per_s"] = len(rows) * batch / train_s if train_s > 0 and rows else None
    # Step times after the warm-up: equilibrium steps (all steps if there are none), without
    # the metered step and, when enough remain, without the first (allocator, caches).
    main_mode = "equilibrium" if m["equilibrium_steps"] else "unrolled"
    times = _settled(log.step_ms, main_mode)
    if times:
        m["step_ms_median"], m["step_ms_iqr"] = median_iqr(times)
    if backward := _settled(log.backward_ms, main_mode):
        m["backward_ms_median"] = statistics.median(backward)
    eq = [r for r in rows if r["mode"] == "equilibrium" and r["f_nfe"] is not None]
    if eq:
        m["f_nfe_mean"] = statistics.fmean(r["f_nfe"] for r in eq)
        m["f_rel_residual_final"] = eq[-1]["f_rel_residual"]
        m["f_rel_residual_median_final"] = eq[-1].get("f_rel_residual_median")
    if log.f_ok:
        m["f_converged_frac"] = sum(log.f_ok) / len(log.f_ok)
    b = [r["b_nfe"] for r in eq if r["b_nfe"] is not None]
    if b:
        m["b_nfe_mean"] = statistics.fmean(b)
    checked = [r for r in rows if r.get("grad_cosine") is not None]
    if checked:
        cosines = [r["grad_cosine"] for r in checked]
        errors = [r["grad_rel_error"] for r in checked]
        m["grad_checks"] = len(checked)
        m["grad_cosine_median"], m["grad_cosine_worst"] = statistics.median(cosines), min(cosines)
        m["grad_rel_error_median"] = statistics.median(errors)
        m["grad_rel_error_worst"] = max(errors)
        m["grad_check_s"] = log.check_s


def _settled(entries: list[tuple[str, float, bool]], mode: str) -> list[float]:
    """The ``(mode, ms, timed)`` times of ``mode``'s timed steps, without the first when
    enough remain (allocator, caches)."""
    times = [ms for m, ms, timed in entries if m == mode and timed]
    return times[1:] if len(times) >= 3 else times


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set to its current one (Linux ``clear_refs``), so a
    run's peak does not include an earlier run's; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_peak_rss_mb() -> float:
    """VmHWM (the peak since the last reset) on Linux; the process's lifetime peak elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()
