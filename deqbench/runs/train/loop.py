"""The training loop: optimizer steps with the recipe, the unrolled warm-up switch, gradient
checks, interim evaluations, checkpoints and the deadline, all as its `LoopSettings` say."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from deqbench.data import DatasetInfo
from deqbench.execution.distributed import SINGLE, Dist, all_reduce
from deqbench.loggers import RunLogger
from deqbench.measure.memory import SavedTensorsMeter
from deqbench.models import Model
from deqbench.report.traces import trace_rows
from deqbench.runs.kind import Observer
from deqbench.runs.train import grad_check
from deqbench.runs.train.batches import Epochs
from deqbench.runs.train.build import TrainState
from deqbench.runs.train.correction import correction_loss, enable_correction
from deqbench.runs.train.grad_check import GradCheck
from deqbench.runs.train.metrics import EvalMeter
from deqbench.runs.train.path_independence import PathMeter
from deqbench.runs.train.settings import LoopSettings
from deqbench.runs.train.snapshot import save_snapshot
from deqbench.runs.train.steplog import PendingStep, StepLog
from deqbench.runs.train.target import check_target

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class OutOfTime(Exception):
    """The run passed its ``[suite] timeout`` (checked between steps, for runs trained in the
    suite's own process; an isolated run's worker is killed instead)."""


@dataclass
class Clock:
    """A run's wall time, training apart from evaluations and gradient checks. ``train_s`` and
    ``eval_s`` are what earlier processes spent on the run (resume); ``start`` is when this
    process began training."""

    train_s: float = 0.0
    eval_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    interim_eval_s: float = 0.0  #: this process's interim evaluations
    check_s: float = 0.0  #: the gradient-check time of earlier processes (in the restored log)

    def elapsed(self, log: StepLog) -> dict[str, float]:
        """``train_s`` and ``eval_s`` so far, as a checkpoint keeps them."""
        now, checks = time.perf_counter(), log.check_s - self.check_s  # this process's checks
        return {
            "train_s": self.train_s + now - self.start - self.interim_eval_s - checks,
            "eval_s": self.eval_s + self.interim_eval_s,
        }


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = _DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_step(
    state: TrainState,
    x: Tensor,
    y: Tensor,
    *,
    settings: LoopSettings,
    info: DatasetInfo,
    meter: SavedTensorsMeter | None = None,
    mark: Callable[[], Any] | None = None,
) -> tuple[Tensor, tuple[Any, Any] | None]:
    """One optimizer step; returns the detached loss (no host sync) and, with ``mark`` (a
    clock such as `StepLog.mark`), its readings around the backward."""
    model = state.model
    state.optimizer.zero_grad(set_to_none=True)
    with meter if meter is not None else contextlib.nullcontext():
        with _autocast(x.device, settings.precision):
            logits = (state.net or model)(x)
            fpc = correction_loss(model, x, y, settings=settings, info=info)  # 0 unless fpc_k
        loss = settings.loss(logits, y, info)
        if model.implicit and not model.unrolled:
            loss = loss + model.jac_reg_loss() + fpc
    start = mark() if mark is not None else None
    state.scaler.scale(loss).backward()
    backward = (start, mark()) if mark is not None else None
    if settings.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step += 1
    return loss.detach(), backward


def _check_gradient(
    state: TrainState,
    x: Tensor,
    y: Tensor,
    *,
    settings: LoopSettings,
    info: DatasetInfo,
    dist: Dist,
) -> GradCheck:
    """`deqbench.runs.train.grad_check.check_gradient` on this step's batch, with the step's
    loss."""

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        return settings.loss(logits, target, info)

    scale = state.scaler.get_scale() if state.scaler.is_enabled() else 1.0
    return grad_check.check_gradient(
        state.model,
        x,
        y,
        loss_fn,
        autocast=lambda: _autocast(x.device, settings.precision),
        loss_scale=scale,
        dist=dist,
    )


def train(
    state: TrainState,
    *,
    settings: LoopSettings,
    batches: Epochs,
    eval_loader: DataLoader,
    info: DatasetInfo,
    log: StepLog,
    clock: Clock,
    dist: Dist = SINGLE,
    observer: Observer | None = None,
    logger: RunLogger | None = None,
) -> dict[str, Any]:
    """Train ``state`` until ``settings.steps`` steps are done: the unrolled warm-up first, then
    equilibrium mode. The run is checkpointed every ``checkpoint_every`` steps and at each
    epoch end, and evaluated every ``eval_every`` epochs (on ``eval_loader``, its time kept in
    ``clock``). Past the deadline the run stops with `OutOfTime`. Returns the measurements that
    are not in the step log."""
    s, model = settings, state.model
    device = next(model.parameters()).device
    per_epoch = batches.per_epoch
    metered_step = min(s.warmup, s.steps - 1)  # the first equilibrium step, or the last one
    model.train()
    enable_correction(model, s.fpc_k)
    model.set_unrolled(s.warmup > 0 and state.step < s.warmup)
    last_refresh = time.perf_counter()
    while state.step < s.steps:
        if state.step >= s.warmup and model.unrolled:
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
        checked = s.grad_check and grad_check.due(step, s.steps, s.grad_check_every)
        if checked and mode == "equilibrium":
            check = _check_gradient(state, x, y, settings=s, info=info, dist=dist)
            log.check_s += check.seconds
            log.restart_clock()  # the step's time is the step's alone
        loss, backward = train_step(state, x, y, settings=s, info=info, meter=meter, mark=log.mark)
        entry = PendingStep(step, state.epoch, mode, loss, lr, x.shape[0] * dist.world_size)
        entry.grad, entry.backward = check, backward
        _add_solver_stats(entry, model)
        log.record(entry, timed=meter is None)
        if meter is not None:
            state.saved_mb = meter.mb
        epoch_end = state.step % per_epoch == 0
        if epoch_end:
            batches.end_epoch()
            state.epoch += 1
            if s.eval_every and state.epoch % s.eval_every == 0 and state.step < s.steps:
                _progress(log.drain(), observer, s, per_epoch)  # the steps, then their eval
                start = time.perf_counter()
                result, _ = evaluate(state, eval_loader, info, settings=s, dist=dist)
                clock.interim_eval_s += time.perf_counter() - start
                check_target(state.target, result, state.step, clock.elapsed(log))
                if logger is not None:
                    logger.log_eval(state.step, result)
                if observer is not None:
                    observer.progress({"eval": result, "epoch": state.epoch, "step": state.step})
                log.restart_clock()
        now = time.perf_counter()
        # Under DDP the drain is collective (losses are averaged over ranks): every rank must
        # drain at the same steps, so the cadence counts steps rather than seconds.
        due = state.step % 20 == 0 if dist.enabled else now - last_refresh >= s.refresh_s
        # the plain progress lines fall on their steps (the same steps on every rank)
        due = due or bool(s.progress_every and state.step % s.progress_every == 0)
        save = epoch_end or bool(s.checkpoint_every and state.step % s.checkpoint_every == 0)
        if state.step == s.steps:  # the finished run's state is in its row, its weights kept
            save = s.keep_checkpoints  # only when asked
        save = save and s.checkpoint is not None
        if due or save:
            _progress(log.drain(), observer, s, per_epoch)
            last_refresh = now
        if save:
            save_snapshot(
                s.checkpoint,
                run=s.run,
                label=s.label,
                state=state,
                log=log,
                batches=batches,
                times=clock.elapsed(log),
                dist=dist,
            )
            log.restart_clock()
        if s.deadline is not None and _past(s.deadline, now, dist, due):
            log.drain()
            raise OutOfTime(f"at step {state.step}")
    _progress(log.drain(), observer, s, per_epoch)
    return {"saved_mb": state.saved_mb}


def _add_solver_stats(entry: PendingStep, model: Model) -> None:
    """The step's forward and backward solver figures (equilibrium steps), left on the device."""
    stats = model.stats if entry.mode == "equilibrium" else None
    if stats is not None and stats.forward is not None:
        result = stats.forward.result
        entry.f_nfe, entry.f_res = result.nfe, result.rel_residual.max()
        entry.f_res_median = result.rel_residual.median()
        entry.f_ok = (result.sample_status.max() == 0) if result.sample_status.numel() else None
        entry.b_nfe = stats.backward.nfe if stats.backward is not None else None


def _progress(
    snapshot: dict[str, Any] | None,
    observer: Observer | None,
    settings: LoopSettings,
    per_epoch: int,
) -> None:
    """Tell the observer a drained log's latest step, and the cadence of the progress lines."""
    if observer is not None and snapshot is not None:
        every = settings.progress_every
        total = settings.steps
        observer.progress(
            {**snapshot, "total": total, "steps_per_epoch": per_epoch, "progress_every": every}
        )


@torch.no_grad()
def evaluate(
    state: TrainState,
    loader: DataLoader,
    info: DatasetInfo,
    *,
    settings: LoopSettings,
    dist: Dist = SINGLE,
    paths: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate in equilibrium mode on at most ``eval_max_batches`` batches (per rank): the
    eval columns, over every rank's share, and the solver trace of the first batch's forward.
    ``paths``: each batch also solved from other starts, as the ``eval_pi_*`` columns
    (`deqbench.runs.train.path_independence`; implicit models)."""
    model = state.model
    device = next(model.parameters()).device
    was_unrolled, was_training = model.unrolled, model.training
    model.eval()
    model.set_unrolled(False)
    meter = EvalMeter(info.task, info.num_classes, info.ignore_index, device)
    nfes: list[int] = []
    residuals: list[Tensor] = []  #: each sample's relative residual, kept on the device
    traces: list[dict[str, Any]] = []
    pi = PathMeter() if paths and model.implicit else None
    limit = settings.eval_max_batches
    # [eval]'s own solver settings, where it sets any (test-time compute; implicit models only)
    solving = contextlib.nullcontext()
    if settings.eval_deq:
        solving = model.deq.overridden(**settings.eval_deq)
    with solving:
        for i, (x, y) in enumerate(loader):
            if limit and i >= limit:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, settings.precision):
                logits = model(x)
            meter.update(logits.float(), y)
            stats = model.stats
            if stats is not None and stats.forward is not None:
                nfes.append(stats.forward.nfe)
                residuals.append(stats.forward.result.rel_residual)
                if i == 0:
                    traces = trace_rows(settings.run, stats.forward.result)
            if pi is not None:  # after the default forward's figures are read
                with _autocast(device, settings.precision):
                    pi.update(model, x, logits, seed=i)
    model.set_unrolled(was_unrolled)
    model.train(was_training)
    meter.reduce(dist)
    nfe = torch.tensor([float(sum(nfes)), float(len(nfes))], dtype=torch.float64)
    if dist.enabled:
        all_reduce(nfe)
    out = meter.result()
    if nfe[1] > 0:
        out["eval_nfe_mean"] = float(nfe[0] / nfe[1])
    if residuals:  # this rank's median; under DDP the row keeps the largest (REDUCE)
        out["eval_f_rel_residual_median"] = float(torch.cat(residuals).float().median())
    if pi is not None:
        out.update(pi.result(dist))
    return out, traces


def _past(deadline: float, now: float, dist: Dist, due: bool) -> bool:
    """Whether the run is past its deadline: every step in one process; under DDP only at the
    collective drains, and as the latest rank's clock says, so that every rank stops together."""
    if not dist.enabled:
        return now > deadline
    if not due:
        return False
    late = torch.tensor([now - deadline], dtype=torch.float64)
    return float(all_reduce(late, torch.distributed.ReduceOp.MAX)) > 0
