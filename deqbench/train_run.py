"""One training run: seed, build, train with the recipe, evaluate, and end as one report row.

The run is a function over a small `TrainState` (model, optimizer, scheduler, grad scaler and
the step/epoch counters), so it can be checkpointed and resumed as a whole. The per-step work
of the harness stays off the critical path: losses, residuals and convergence flags are kept
as device tensors in a `StepLog` and read back only when it is drained, at a display refresh
(every ``refresh_s``) and at the end, so there is no host sync between refreshes.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from deqbench.data import DataSource, make_loader
from deqbench.errors import ConfigError
from deqbench.measure import MB, median_iqr, peak_rss_mb
from deqbench.memory import SavedTensorsMeter
from deqbench.metrics import EvalMeter, task_loss
from deqbench.models import DEQSettings, Model, parameter_count
from deqbench.plugins import get_registry
from deqbench.recipe import build_optimizer, build_scheduler
from deqbench.solve_run import trace_rows
from deqbench.train_suite import TrainRun

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class Observer(Protocol):
    """What the live display is told; every method is optional to act on."""

    def run_started(self, run: TrainRun, total_steps: int) -> None: ...

    def progress(self, snapshot: dict[str, Any]) -> None: ...


# -- state ----------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What carries over from step to step: all that a checkpoint needs to resume a run."""

    model: Model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int = 0
    epoch: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]


@dataclass
class _Pending:
    step: int
    epoch: int
    mode: str
    loss: Tensor
    lr: float
    images: int
    f_nfe: int | None = None
    f_res: Tensor | None = None
    f_ok: Tensor | None = None
    b_nfe: int | None = None


class StepLog:
    """Per-step records, kept as device tensors until `drain` reads them all at once."""

    def __init__(
        self, device: torch.device, on_row: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.device = device
        self.on_row = on_row  #: told each step row as it is drained (the TensorBoard log)
        self.rows: list[dict[str, Any]] = []  #: drained: the report's step rows
        self.step_ms: list[tuple[str, float, bool]] = []  #: (mode, ms, timed)
        self.f_ok: list[bool] = []
        self._pending: list[tuple[_Pending, Any, bool]] = []
        self._last = self._mark()

    def _mark(self) -> Any:
        if self.device.type == "cuda":  # an event, so that timing each step needs no sync
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def restart_clock(self) -> None:
        """Steps are timed from here (after an evaluation, say)."""
        self._last = self._mark()

    def record(self, entry: _Pending, timed: bool = True) -> None:
        now = self._mark()
        self._pending.append((entry, (self._last, now), timed))
        self._last = now

    def drain(self) -> dict[str, Any] | None:
        """Read every pending record back (one sync); raise `Diverged` on a non-finite loss.
        Returns the latest step's numbers for the display, None when nothing was pending."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        losses = torch.stack([p.loss.float() for p, _, _ in pending]).tolist()
        for (p, (start, end), timed), loss in zip(pending, losses, strict=True):
            if isinstance(start, float):
                ms = (end - start) * 1e3
            else:
                end.synchronize()
                ms = start.elapsed_time(end)
            self.step_ms.append((p.mode, ms, timed))
            if p.f_ok is not None:
                self.f_ok.append(bool(p.f_ok))
            self.rows.append(
                {
                    "step": p.step,
                    "epoch": p.epoch,
                    "mode": p.mode,
                    "loss": loss,
                    "lr": p.lr,
                    "f_nfe": p.f_nfe,
                    "f_rel_residual": None if p.f_res is None else float(p.f_res),
                    "b_nfe": p.b_nfe,
                    "images_per_s": p.images / (ms / 1e3) if ms > 0 else None,
                }
            )
            if self.on_row is not None:
                self.on_row(self.rows[-1])
            if not math.isfinite(loss):
                raise Diverged(f"the training loss became {loss} at step {p.step}")
        return self.rows[-1]


# -- building -------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_source(run: TrainRun) -> DataSource:
    """The run's dataset (its factory checks the root at once)."""
    ds = run.spec.dataset
    factory = get_registry().get("datasets", ds.name).obj
    return factory(root=ds.root or None, image_size=ds.image_size, **ds.options)


def deq_settings(run: TrainRun) -> DEQSettings:
    return DEQSettings(**run.spec.deq.model_dump())


def build_model(run: TrainRun, source: DataSource, device: torch.device) -> Model:
    """The run's model from its registered factory, on ``device``."""
    spec, info = run.spec, source.info
    factory = get_registry().get("models", spec.model.name).obj
    model = factory(
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        image_size=spec.dataset.image_size,
        head=spec.model.head or None,
        head_options=dict(spec.model.head_options) or None,
        deq=deq_settings(run),
        **spec.model.options,
    )
    return model.to(device)


def total_steps(run: TrainRun, steps_per_epoch: int) -> int:
    recipe = run.spec.recipe
    total = recipe.steps if recipe.steps is not None else recipe.epochs * steps_per_epoch
    return min(total, run.max_steps) if run.max_steps else total


def build_state(run: TrainRun, model: Model, steps: int) -> TrainState:
    recipe = run.spec.recipe
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe.schedule, steps, **recipe.schedule_options)
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, enabled=recipe.precision == "fp16")
    return TrainState(model, optimizer, scheduler, scaler)


# -- training -------------------------------------------------------------------------------------
def _autocast(device: torch.device, precision: str):
    dtype = _DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_step(
    state: TrainState,
    x: Tensor,
    y: Tensor,
    run: TrainRun,
    task: str,
    ignore_index: int | None,
    meter: SavedTensorsMeter | None = None,
) -> Tensor:
    """One optimizer step; returns the detached loss (no host sync)."""
    recipe, model = run.spec.recipe, state.model
    device = x.device
    state.optimizer.zero_grad(set_to_none=True)
    with meter if meter is not None else contextlib.nullcontext():
        with _autocast(device, recipe.precision):
            logits = model(x)
        loss = task_loss(
            logits,
            y,
            task=task,
            ignore_index=ignore_index,
            label_smoothing=recipe.label_smoothing,
        )
        if model.implicit and not model.unrolled:
            loss = loss + model.jac_reg_loss()
    state.scaler.scale(loss).backward()
    if recipe.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step += 1
    return loss.detach()


def _batches(loader, state: TrainState) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches across epochs without end; ``state.epoch`` counts the passes completed."""
    while True:
        yield from loader
        state.epoch += 1


def train(
    state: TrainState,
    run: TrainRun,
    loaders: tuple[Any, Any],
    info: Any,
    steps: int,
    log: StepLog,
    observer: Observer | None = None,
    refresh_s: float = 0.5,
    evaluate_fn=None,
) -> dict[str, Any]:
    """Train ``state`` until ``steps`` steps are done: the unrolled warm-up first, then
    equilibrium mode. Returns the measurements that are not in the step log."""
    model, recipe = state.model, run.spec.recipe
    device = next(model.parameters()).device
    warmup = recipe.unrolled_warmup_steps if model.implicit else 0
    train_loader = loaders[0]
    steps_per_epoch = len(train_loader)
    every = run.spec.eval.every_epochs
    saved_mb: float | None = None
    metered_step = min(warmup, steps - 1)  # the first equilibrium step, or the last one
    model.train()
    model.set_unrolled(warmup > 0 and state.step < warmup)
    last_refresh = time.perf_counter()
    batches = _batches(train_loader, state)
    while state.step < steps:
        if state.step == warmup and model.unrolled:
            model.set_unrolled(False)  # the warm-up switch, at the configured step
        epoch = state.epoch
        x, y = next(batches)
        if state.epoch != epoch and evaluate_fn and every and state.epoch % every == 0:
            evaluate_fn(state, interim=True)
            log.restart_clock()
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        meter = None
        if state.step == metered_step:
            meter = SavedTensorsMeter(ignore=model.parameters())
        mode = "unrolled" if model.unrolled else "equilibrium"
        lr = state.optimizer.param_groups[0]["lr"]
        step = state.step
        loss = train_step(state, x, y, run, info.task, info.ignore_index, meter)
        entry = _Pending(step, state.epoch, mode, loss, lr, x.shape[0])
        stats = model.stats if mode == "equilibrium" else None
        if stats is not None and stats.forward is not None:
            result = stats.forward.result
            entry.f_nfe, entry.f_res = result.nfe, result.rel_residual.max()
            entry.f_ok = (result.sample_status.max() == 0) if result.sample_status.numel() else None
            entry.b_nfe = stats.backward.nfe if stats.backward is not None else None
        log.record(entry, timed=meter is None)
        if meter is not None:
            saved_mb = meter.mb
        now = time.perf_counter()
        if now - last_refresh >= refresh_s:
            snapshot = log.drain()
            last_refresh = now
            if observer is not None and snapshot is not None:
                observer.progress({**snapshot, "total": steps, "steps_per_epoch": steps_per_epoch})
    snapshot = log.drain()
    if observer is not None and snapshot is not None:
        observer.progress({**snapshot, "total": steps, "steps_per_epoch": steps_per_epoch})
    return {"saved_mb": saved_mb}


@torch.no_grad()
def evaluate(
    state: TrainState, run: TrainRun, loader, info: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate in equilibrium mode on at most ``eval.max_batches`` batches: the eval columns
    and the solver trace of the first batch's forward."""
    model = state.model
    device = next(model.parameters()).device
    was_unrolled, was_training = model.unrolled, model.training
    model.eval()
    model.set_unrolled(False)
    meter = EvalMeter(info.task, info.num_classes, info.ignore_index, device)
    nfes: list[int] = []
    traces: list[dict[str, Any]] = []
    limit = run.spec.eval.max_batches
    for i, (x, y) in enumerate(loader):
        if limit and i >= limit:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, run.spec.recipe.precision):
            logits = model(x)
        meter.update(logits.float(), y)
        stats = model.stats
        if stats is not None and stats.forward is not None:
            nfes.append(stats.forward.nfe)
            if i == 0:
                traces = trace_rows(run.index, stats.forward.result)
    model.set_unrolled(was_unrolled)
    model.train(was_training)
    out = meter.result()
    if nfes:
        out["eval_nfe_mean"] = statistics.fmean(nfes)
    return out, traces


# -- memory ---------------------------------------------------------------------------------------
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


# -- one run → one row ----------------------------------------------------------------------------
@dataclass
class RunOutput:
    """What one training run produced: its row's measurements, step rows and trace rows."""

    metrics: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)  #: wall time of each step, in order


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
        "options": _json(run.options),
        "seed": run.seed,
        "precision": spec.recipe.precision,
        "max_steps": run.max_steps,
        "device": str(device),
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
) -> RunOutput:
    """Seed, build, train, evaluate. A NaN loss ends the run as ``diverged`` (its steps so far
    kept); other exceptions propagate to the suite runner, which records them.

    With ``[logging] tensorboard = true`` and a ``report`` path, the step rows and each
    evaluation also go to the run's TensorBoard folder beside the report (`deqbench.logging_tb`).
    """
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
    m["params"] = parameter_count(model)
    if not model.implicit:
        m.update(dict.fromkeys(EXPLICIT_BLANK, None))
    ds = run.spec.dataset
    train_set, eval_set = source.dataset(info.train_split), source.dataset(info.eval_split)
    common = {"workers": ds.workers, "device": device, "seed": run.seed}
    loaders = (
        make_loader(train_set, batch_size=ds.batch_size, shuffle=True, drop_last=True, **common),
        make_loader(
            eval_set, batch_size=ds.eval_batch_size or ds.batch_size, shuffle=False, **common
        ),
    )
    steps = total_steps(run, len(loaders[0]))
    state = build_state(run, model, steps)
    if observer is not None:
        observer.run_started(run, steps)
    tb = None
    if run.spec.logging.tensorboard and report is not None:
        from deqbench.logging_tb import TensorBoardRun

        tb = TensorBoardRun(report, run.index, run.label)
    log = StepLog(device, on_row=tb.log_step if tb is not None else None)
    eval_s = 0.0

    def interim_eval(state: TrainState, interim: bool = False) -> None:
        nonlocal eval_s
        start = time.perf_counter()
        result, _ = evaluate(state, run, loaders[1], info)
        eval_s += time.perf_counter() - start
        if tb is not None:
            tb.log_scalars(state.step, _eval_scalars(result))
        if observer is not None:
            observer.progress({"eval": result, "epoch": state.epoch})

    start = time.perf_counter()
    try:
        extra = train(state, run, loaders, info, steps, log, observer, refresh_s, interim_eval)
        m.update(extra)
        m["status"] = "completed"
    except Diverged as exc:
        m.update(status="diverged", error=str(exc))
    except BaseException:
        if tb is not None:
            tb.close()
        raise
    finally:
        train_s = time.perf_counter() - start - eval_s
        out.steps = [{"run": run.index, **row} for row in log.rows]
        out.step_ms = [ms for _, ms, _ in log.step_ms]
    _summarise(m, log, train_s, state, ds.batch_size, len(loaders[0]))
    try:
        if m["status"] == "completed":
            result, out.traces = evaluate(state, run, loaders[1], info)
            m.update(result)
            if tb is not None:
                tb.log_scalars(state.step, _eval_scalars(result))
    finally:
        if tb is not None:
            tb.close()
    if device.type == "cuda":
        m["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / MB
    m["rss_peak_mb"] = run_peak_rss_mb()
    return out


def _eval_scalars(result: dict[str, Any]) -> dict[str, Any]:
    """Eval columns as TensorBoard tags: ``eval_top1`` → ``eval/top1``."""
    return {"eval/" + k.removeprefix("eval_"): v for k, v in result.items()}


def _summarise(
    m: dict[str, Any], log: StepLog, train_s: float, state: TrainState, batch: int, per_epoch: int
) -> None:
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
    times = [ms for mode, ms, timed in log.step_ms if mode == main_mode and timed]
    if len(times) >= 3:
        times = times[1:]
    if times:
        m["step_ms_median"], m["step_ms_iqr"] = median_iqr(times)
    eq = [r for r in rows if r["mode"] == "equilibrium" and r["f_nfe"] is not None]
    if eq:
        m["f_nfe_mean"] = statistics.fmean(r["f_nfe"] for r in eq)
        m["f_rel_residual_final"] = eq[-1]["f_rel_residual"]
    if log.f_ok:
        m["f_converged_frac"] = sum(log.f_ok) / len(log.f_ok)
    b = [r["b_nfe"] for r in eq if r["b_nfe"] is not None]
    if b:
        m["b_nfe_mean"] = statistics.fmean(b)
