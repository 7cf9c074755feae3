"""Unrolled backprop: the explicit, weight-tied baseline whose memory grows with depth.

It replaces the forward solve in training: ``f`` is applied ``steps`` times from the layer's
``z0`` with the graph kept, and ordinary backprop trains through all of them (MDEQ's unrolled
warm-up). The forward statistics record the residual of each layer's input, with the layer's
``f_tol`` and stop mode: ``nfe`` is the depth, ``status`` says whether the stack reached the
equilibrium, and ``nstep`` and the residuals are those of the first layer that did (the stack
itself never stops early).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from deqbench.gradients.base import GradContext, GradientEstimator
from deqbench.solvers.base import Fn, Monitor


@dataclass(kw_only=True)
class Unrolled(GradientEstimator):
    """``steps`` applications of ``f`` from ``z0`` (None: the layer's ``f_max_iter``)."""

    unrolls_forward: ClassVar[bool] = True
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def __call__(self, f: Fn, z_star: Tensor | None, ctx: GradContext) -> Tensor:
        steps = ctx.f_max_iter if self.steps is None else self.steps
        z = ctx.z0.detach()
        # A fixed depth: the monitor only records, it never stops the stack early.
        monitor = Monitor(z, steps, ctx.f_tol, ctx.f_stop_mode, divergence=math.inf)
        for _ in range(steps):
            fz = f(z)
            with torch.no_grad():
                monitor.observe(z.detach(), fz.detach(), fz.detach() - z.detach())
            z = fz
        ctx.stats.record_forward(monitor.result())
        return z
