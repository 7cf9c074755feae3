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

from deqbench import grad_check
from deqbench.data import DataSource, make_loader
from deqbench.distributed import (
    SINGLE,
    Dist,
    EvalSampler,
    TrainSampler,
    all_reduce,
    mean_over_ranks,
    rank_batch,
    reduce_metrics,
    wrap_model,
)
from deqbench.duration import format_duration
from deqbench.errors import ConfigError
from deqbench.grad_check import GradCheck
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


class OutOfTime(Exception):
    """The run passed its ``[suite] timeout`` (checked between steps, for runs trained in the
    suite's own process; an isolated run's worker is killed instead)."""


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
    saved_mb: float | None = None  #: saved activations of the metered step
    net: torch.nn.Module | None = None  #: what the forward goes through (DDP); None: model

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "saved_mb": self.saved_mb,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.saved_mb = state.get("saved_mb")


@dataclass
class _Pending:
    step: int
    epoch: int
    mode: str
    loss: Tensor
    lr: float
    images: int
    f_nfe: int | None = None
    f_res: Tensor | None = None  #: worst sample's relative residual
    f_res_median: Tensor | None = None
    f_ok: Tensor | None = None
    b_nfe: int | None = None
    grad: GradCheck | None = None


class StepLog:
    """Per-step records, kept as device tensors until `drain` reads them all at once."""

    def __init__(
        self,
        device: torch.device,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        ctx: Dist = SINGLE,
    ) -> None:
        self.device, self.ctx = device, ctx
        self.on_row = on_row  #: told each step row as it is drained (the TensorBoard log)
        self.rows: list[dict[str, Any]] = []  #: drained: the report's step rows
        self.step_ms: list[tuple[str, float, bool]] = []  #: (mode, ms, timed)
        self.f_ok: list[bool] = []
        self.check_s = 0.0  #: wall time of the gradient checks (not training time)
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
        losses = torch.stack([p.loss.float() for p, _, _ in pending])
        # Under DDP each rank's loss is over its part of the batch: their mean is the global
        # batch's loss, and every rank sees the same numbers (so all agree on a divergence).
        losses = mean_over_ranks(losses, self.ctx).tolist()
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
                    "f_rel_residual_median": _float(p.f_res_median),
                    "b_nfe": p.b_nfe,
                    "images_per_s": p.images / (ms / 1e3) if ms > 0 else None,
                    **(p.grad.columns() if p.grad is not None else {}),
                }
            )
            if self.on_row is not None:
                self.on_row(self.rows[-1])
            if not math.isfinite(loss):
                raise Diverged(f"the training loss became {loss} at step {p.step}")
        return self.rows[-1]


def _float(value: Tensor | None) -> float | None:
    return None if value is None else float(value)


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
            logits = (state.net or model)(x)
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


def _check_gradient(
    state: TrainState, run: TrainRun, x: Tensor, y: Tensor, info: Any, ctx: Dist
) -> GradCheck:
    """`deqbench.grad_check.check_gradient` on this step's batch, with the step's loss."""
    recipe = run.spec.recipe

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        return task_loss(
            logits,
            target,
            task=info.task,
            ignore_index=info.ignore_index,
            label_smoothing=recipe.label_smoothing,
        )

    scale = state.scaler.get_scale() if state.scaler.is_enabled() else 1.0
    return grad_check.check_gradient(
        state.model,
        x,
        y,
        loss_fn,
        autocast=lambda: _autocast(x.device, recipe.precision),
        loss_scale=scale,
        ctx=ctx,
    )


class Epochs:
    """The training batches, epoch after epoch, from any step: the sampler reshuffles from
    ``seed + epoch`` and skips what the epoch already trained on, and the loader's generator
    (which seeds its workers) is rewound to where the epoch began, so a resumed run sees the
    batches, in order, that an uninterrupted one would have."""

    def __init__(self, loader: Any, sampler: TrainSampler, rank_batch: int) -> None:
        self.loader, self.sampler, self.rank_batch = loader, sampler, rank_batch
        self.per_epoch = sampler.num_samples // rank_batch
        self.epoch_rng: Tensor | None = None  #: the loader generator's state at epoch start
        self._it: Iterator | None = None

    def next(self, state: TrainState) -> tuple[Tensor, Tensor]:
        if self._it is None:
            state.epoch = state.step // self.per_epoch
            self.sampler.set_epoch(state.epoch)
            self.sampler.start = (state.step % self.per_epoch) * self.rank_batch
            if self.epoch_rng is None:
                self.epoch_rng = self.loader.generator.get_state()
            else:
                self.loader.generator.set_state(self.epoch_rng)
            self._it = iter(self.loader)
        return next(self._it)

    def end_epoch(self) -> None:
        """The epoch's last batch was trained on: the next `next` starts a new one."""
        self._it = None
        self.epoch_rng = self.loader.generator.get_state()


def train(
    state: TrainState,
    run: TrainRun,
    batches: Epochs,
    info: Any,
    steps: int,
    log: StepLog,
    observer: Observer | None = None,
    refresh_s: float = 0.5,
    evaluate_fn=None,
    checkpoint_fn=None,
    ctx: Dist = SINGLE,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Train ``state`` until ``steps`` steps are done: the unrolled warm-up first, then
    equilibrium mode. ``checkpoint_fn(state)`` is called every ``[suite] checkpoint_every``
    steps and at each epoch end. Past ``deadline`` (a `time.perf_counter` value) the run
    stops with `OutOfTime`. Returns the measurements that are not in the step log."""
    model, recipe = state.model, run.spec.recipe
    device = next(model.parameters()).device
    warmup = recipe.unrolled_warmup_steps if model.implicit else 0
    per_epoch = batches.per_epoch
    every = run.spec.eval.every_epochs
    checks, checks_every = (
        model.implicit and run.spec.eval.grad_check,
        run.spec.eval.grad_check_every,
    )
    ckpt_every = run.spec.suite.checkpoint_every
    metered_step = min(warmup, steps - 1)  # the first equilibrium step, or the last one
    model.train()
    model.set_unrolled(warmup > 0 and state.step < warmup)
    last_refresh = time.perf_counter()
    while state.step < steps:
        if state.step >= warmup and model.unrolled:
            model.set_unrolled(False)  # the warm-up switch, at the configured step
        x, y = batches.next(state)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        meter = None
        if state.step == metered_step:
            meter = SavedTensorsMeter(ignore=model.parameters())
        mode = "unrolled" if model.unrolled else "equilibrium"
        lr = state.optimizer.param_groups[0]["lr"]
        step = state.step
        check = None
        if checks and mode == "equilibrium" and grad_check.due(step, steps, checks_every):
            check = _check_gradient(state, run, x, y, info, ctx)
            log.check_s += check.seconds
            log.restart_clock()  # the step's time is the step's alone
        loss = train_step(state, x, y, run, info.task, info.ignore_index, meter)
        entry = _Pending(step, state.epoch, mode, loss, lr, x.shape[0] * ctx.world_size)
        entry.grad = check
        stats = model.stats if mode == "equilibrium" else None
        if stats is not None and stats.forward is not None:
            result = stats.forward.result
            entry.f_nfe, entry.f_res = result.nfe, result.rel_residual.max()
            entry.f_res_median = result.rel_residual.median()
            entry.f_ok = (result.sample_status.max() == 0) if result.sample_status.numel() else None
            entry.b_nfe = stats.backward.nfe if stats.backward is not None else None
        log.record(entry, timed=meter is None)
        if meter is not None:
            state.saved_mb = meter.mb
        epoch_end = state.step % per_epoch == 0
        if epoch_end:
            batches.end_epoch()
            state.epoch += 1
            if evaluate_fn and every and state.epoch % every == 0 and state.step < steps:
                evaluate_fn(state, interim=True)
                log.restart_clock()
        now = time.perf_counter()
        # Under DDP the drain is collective (losses are averaged over ranks): every rank must
        # drain at the same steps, so the cadence counts steps rather than seconds.
        due = state.step % 20 == 0 if ctx.enabled else now - last_refresh >= refresh_s
        save = epoch_end or bool(ckpt_every and state.step % ckpt_every == 0)
        if state.step == steps:  # the finished run's state is in its row, its weights kept
            save = run.spec.suite.keep_checkpoints  # only when asked
        save = save and checkpoint_fn is not None
        if due or save:
            snapshot = log.drain()
            last_refresh = now
            if observer is not None and snapshot is not None:
                observer.progress({**snapshot, "total": steps, "steps_per_epoch": per_epoch})
        if save:
            checkpoint_fn(state)
            log.restart_clock()
        if deadline is not None and _past(deadline, now, ctx, due):
            log.drain()
            raise OutOfTime(f"at step {state.step}")
    snapshot = log.drain()
    if observer is not None and snapshot is not None:
        observer.progress({**snapshot, "total": steps, "steps_per_epoch": per_epoch})
    return {"saved_mb": state.saved_mb}


@torch.no_grad()
def evaluate(
    state: TrainState, run: TrainRun, loader, info: Any, ctx: Dist = SINGLE
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate in equilibrium mode on at most ``eval.max_batches`` batches (per rank): the
    eval columns, over every rank's share, and the solver trace of the first batch's forward."""
    model = state.model
    device = next(model.parameters()).device
    was_unrolled, was_training = model.unrolled, model.training
    model.eval()
    model.set_unrolled(False)
    meter = EvalMeter(info.task, info.num_classes, info.ignore_index, device)
    nfes: list[int] = []
    residuals: list[Tensor] = []  #: each sample's relative residual, kept on the device
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
            residuals.append(stats.forward.result.rel_residual)
            if i == 0:
                traces = trace_rows(run.index, stats.forward.result)
    model.set_unrolled(was_unrolled)
    model.train(was_training)
    meter.reduce(ctx)
    nfe = torch.tensor([float(sum(nfes)), float(len(nfes))], dtype=torch.float64)
    if ctx.enabled:
        all_reduce(nfe)
    out = meter.result()
    if nfe[1] > 0:
        out["eval_nfe_mean"] = float(nfe[0] / nfe[1])
    if residuals:  # this rank's median; under DDP the row keeps the largest (REDUCE)
        out["eval_f_rel_residual_median"] = float(torch.cat(residuals).float().median())
    return out, traces


def _past(deadline: float, now: float, ctx: Dist, due: bool) -> bool:
    """Whether the run is past its deadline: every step in one process; under DDP only at the
    collective drains, and as the latest rank's clock says, so that every rank stops together."""
    if not ctx.enabled:
        return now > deadline
    if not due:
        return False
    late = torch.tensor([now - deadline], dtype=torch.float64)
    return float(all_reduce(late, torch.distributed.ReduceOp.MAX)) > 0


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
    ctx: Dist = SINGLE,
    checkpoint: Path | None = None,
    resume: bool = False,
    timeout_s: float | None = None,
) -> RunOutput:
    """Seed, build, train, evaluate. A NaN loss ends the run as ``diverged`` (its steps so far
    kept); other exceptions propagate to the suite runner, which records them.

    ``checkpoint`` is where the run checkpoints (every ``[suite] checkpoint_every`` steps and
    at each epoch end; None: never); with ``resume`` the run continues from it when it exists.
    ``timeout_s`` ends the run as ``timeout`` at the first step past it (counted from here).
    Under torch.distributed (``ctx``) the batch is split over the ranks, the model trains in
    DDP, and the row's figures are combined over the ranks (`deqbench.distributed`).

    With ``[logging] tensorboard = true`` and a ``report`` path, the step rows and each
    evaluation also go to the run's TensorBoard folder beside the report (`deqbench.logging_tb`).
    """
    from deqbench.checkpoint import load_checkpoint

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
    if ctx.rank:  # the same initial weights on every rank, then each rank its own draws
        seed_everything(run.seed + 7919 * ctx.rank)
    m["params"] = parameter_count(model)
    if not model.implicit:
        m.update(dict.fromkeys(EXPLICIT_BLANK, None))
    ds = run.spec.dataset
    per_rank = rank_batch(ds.batch_size, ctx)
    eval_batch = -(-(ds.eval_batch_size or ds.batch_size) // ctx.world_size)
    train_set, eval_set = source.dataset(info.train_split), source.dataset(info.eval_split)
    common = {"workers": ds.workers, "device": device, "seed": run.seed}
    sampler = TrainSampler(train_set, ctx, seed=run.seed)
    eval_sampler = EvalSampler(eval_set, ctx) if ctx.enabled else None
    loaders = (
        make_loader(
            train_set, batch_size=per_rank, shuffle=True, sampler=sampler, drop_last=True, **common
        ),
        make_loader(eval_set, batch_size=eval_batch, shuffle=False, sampler=eval_sampler, **common),
    )
    batches = Epochs(loaders[0], sampler, per_rank)
    if batches.per_epoch == 0:
        raise ConfigError(
            f"dataset.batch_size = {ds.batch_size} is larger than the {len(train_set)} "
            f"training samples of {ds.name!r}"
        )
    steps = total_steps(run, batches.per_epoch)
    state = build_state(run, model, steps)
    tb = None
    if run.spec.logging.tensorboard and report is not None and ctx.is_main:
        from deqbench.logging_tb import TensorBoardRun

        tb = TensorBoardRun(report, run.index, run.label)
    log = StepLog(device, on_row=tb.log_step if tb is not None else None, ctx=ctx)
    times = {"train_s": 0.0, "eval_s": 0.0}  # before this process took over (resume)
    if resume and checkpoint is not None and checkpoint.exists():
        _restore(load_checkpoint(checkpoint), state, log, batches, times, ctx)
        m["resumed_from_step"] = state.step
    warmup = run.spec.recipe.unrolled_warmup_steps if model.implicit else 0
    state.net = wrap_model(model, ctx, device, warmup=warmup > state.step)
    if observer is not None:
        observer.run_started(run, steps)
    eval_s = 0.0

    def interim_eval(state: TrainState, interim: bool = False) -> None:
        nonlocal eval_s
        start = time.perf_counter()
        result, _ = evaluate(state, run, loaders[1], info, ctx)
        eval_s += time.perf_counter() - start
        if tb is not None:
            tb.log_scalars(state.step, _eval_scalars(result))
        if observer is not None:
            observer.progress({"eval": result, "epoch": state.epoch})

    start = time.perf_counter()

    def save(state: TrainState) -> None:
        elapsed = {
            "train_s": times["train_s"] + time.perf_counter() - start - eval_s - log.check_s,
            "eval_s": times["eval_s"] + eval_s,
        }
        _save(checkpoint, run, state, log, batches, elapsed, ctx)

    save_fn = save if checkpoint is not None and run.spec.suite.checkpoint else None
    try:
        extra = train(
            state,
            run,
            batches,
            info,
            steps,
            log,
            observer,
            refresh_s,
            interim_eval,
            save_fn,
            ctx,
            deadline,
        )
        m.update(extra)
        m["status"] = "completed"
    except Diverged as exc:
        m.update(status="diverged", error=str(exc))
    except OutOfTime as exc:
        limit = f"{format_duration(timeout_s)} ({timeout_s:g} s)"
        m.update(status="timeout", error=f"exceeded its timeout of {limit} {exc}")
    except BaseException:
        if tb is not None:
            tb.close()
        raise
    finally:
        train_s = times["train_s"] + time.perf_counter() - start - eval_s - log.check_s
        out.steps = [{"run": run.index, **row} for row in log.rows]
        out.step_ms = [ms for _, ms, _ in log.step_ms]
    _summarise(m, log, train_s, state, ds.batch_size, batches.per_epoch)
    try:
        if m["status"] == "completed":
            result, out.traces = evaluate(state, run, loaders[1], info, ctx)
            m.update(result)
            if tb is not None:
                tb.log_scalars(state.step, _eval_scalars(result))
    finally:
        if tb is not None:
            tb.close()
    if device.type == "cuda":
        m["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / MB
    m["rss_peak_mb"] = run_peak_rss_mb()
    m["world_size"] = ctx.world_size
    reduce_metrics(m, ctx)
    return out


# -- checkpoints ----------------------------------------------------------------------------------
def _save(
    path: Path,
    run: TrainRun,
    state: TrainState,
    log: StepLog,
    batches: Epochs,
    times: dict[str, float],
    ctx: Dist,
) -> None:
    """Checkpoint the run (the step log already drained). Every rank's RNG states are kept, so
    each rank of a resumed DDP run continues its own streams; rank 0 writes the file."""
    from deqbench.checkpoint import rng_state, save_checkpoint

    rng = rng_state()
    rngs = [rng]
    if ctx.enabled:
        rngs = [None] * ctx.world_size
        torch.distributed.all_gather_object(rngs, rng)
    if not ctx.is_main:
        return
    save_checkpoint(
        path,
        {
            "run": run.index,
            "label": run.label,
            "state": state.state_dict(),
            "unrolled": state.model.unrolled,  # the warm-up state (also implied by the step)
            "rng": rngs,
            "loader_rng": batches.epoch_rng,  # the train loader's generator at epoch start
            "log": {
                "rows": log.rows,
                "step_ms": log.step_ms,
                "f_ok": log.f_ok,
                "check_s": log.check_s,
            },
            "world_size": ctx.world_size,
            **times,
        },
    )


def _restore(
    saved: dict[str, Any],
    state: TrainState,
    log: StepLog,
    batches: Epochs,
    times: dict[str, float],
    ctx: Dist,
) -> None:
    """Put a run back where `_save` left it; RNG states last, after everything that draws."""
    from deqbench.checkpoint import set_rng_state

    state.load_state_dict(saved["state"])
    state.model.set_unrolled(bool(saved["unrolled"]))
    log.rows = list(saved["log"]["rows"])
    log.step_ms = [tuple(t) for t in saved["log"]["step_ms"]]
    log.f_ok = list(saved["log"]["f_ok"])
    log.check_s = saved["log"].get("check_s", 0.0)
    times.update(train_s=saved["train_s"], eval_s=saved["eval_s"])
    batches.epoch_rng = saved["loader_rng"]
    rngs = saved["rng"]
    set_rng_state(rngs[ctx.rank % len(rngs)])


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


# -- in a worker process --------------------------------------------------------------------------
class _EmitObserver:
    """Forwards the observer calls of a run in a worker process to the suite's process."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit

    def run_started(self, run: TrainRun, total_steps: int) -> None:
        self.emit(("run_started", total_steps))

    def progress(self, snapshot: dict[str, Any]) -> None:
        self.emit(("progress", snapshot))


def train_in_worker(
    emit: Callable[[Any], None],
    run: TrainRun,
    device: str,
    report: str | None,
    checkpoint: str | None,
    resume: bool,
) -> RunOutput:
    """`train_run` as the target of `deqbench.worker.run_isolated`: the run builds its own data
    source, and tells its progress through ``emit`` as ``("run_started", total)`` and
    ``("progress", snapshot)`` events."""
    return train_run(
        run,
        torch.device(device),
        observer=_EmitObserver(emit),
        report=report,
        checkpoint=Path(checkpoint) if checkpoint else None,
        resume=resume,
    )
