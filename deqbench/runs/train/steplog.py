"""The per-step log of a training run: one row per optimizer step, kept as device tensors until
it is drained (one host sync), so the harness adds no sync between display refreshes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deqbench.execution.distributed import SINGLE, Dist, mean_over_ranks
from deqbench.runs.train.grad_check import GradCheck


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class PendingStep:
    """One step as `StepLog.record` takes it: its figures still device tensors."""

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
    backward: tuple[Any, Any] | None = None  #: `StepLog.mark`s around the step's backward


class StepLog:
    """Per-step records, kept as device tensors until `drain` reads them all at once."""

    def __init__(
        self,
        device: torch.device,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        dist: Dist = SINGLE,
    ) -> None:
        self.device, self.dist = device, dist
        self.on_row = on_row  #: told each step row as it is drained (the TensorBoard log)
        self.rows: list[dict[str, Any]] = []  #: drained: the report's step rows
        self.step_ms: list[tuple[str, float, bool]] = []  #: (mode, ms, timed)
        self.backward_ms: list[tuple[str, float, bool]] = []  #: the same, of the backward
        self.f_ok: list[bool] = []
        self.check_s = 0.0  #: wall time of the gradient checks (not training time)
        self._pending: list[tuple[PendingStep, Any, bool]] = []
        self._last = self.mark()

    def mark(self) -> Any:
        """A point in time: a recorded CUDA event (no sync) or `time.perf_counter`."""
        if self.device.type == "cuda":  # an event, so that timing each step needs no sync
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def restart_clock(self) -> None:
        """Steps are timed from here (after an evaluation, say)."""
        self._last = self.mark()

    def record(self, entry: PendingStep, timed: bool = True) -> None:
        now = self.mark()
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
        losses = mean_over_ranks(losses, self.dist).tolist()
        for (p, (start, end), timed), loss in zip(pending, losses, strict=True):
            ms = _elapsed_ms(start, end)
            self.step_ms.append((p.mode, ms, timed))
            backward_ms = None if p.backward is None else _elapsed_ms(*p.backward)
            if backward_ms is not None:
                self.backward_ms.append((p.mode, backward_ms, timed))
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
                    "backward_ms": backward_ms,
                    "images_per_s": p.images / (ms / 1e3) if ms > 0 else None,
                    **(p.grad.columns() if p.grad is not None else {}),
                }
            )
            if self.on_row is not None:
                self.on_row(self.rows[-1])
            if not math.isfinite(loss):
                raise Diverged(f"the training loss became {loss} at step {p.step}")
        return self.rows[-1]


def _elapsed_ms(start: Any, end: Any) -> float:
    """Milliseconds between two `StepLog.mark`s."""
    if isinstance(start, float):
        return (end - start) * 1e3
    end.synchronize()
    return start.elapsed_time(end)


def _float(value: Tensor | None) -> float | None:
    return None if value is None else float(value)
