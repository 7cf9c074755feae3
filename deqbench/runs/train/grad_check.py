"""How close the gradient a training run uses comes to the exact implicit gradient.

At sampled steps (every ``[eval] grad_check_every`` steps, and the last one), just before the
step, the model computes the task loss's parameter gradient twice on the step's batch, at the
step's parameters and with the step's dropout masks: once as the run computes it (its solver,
caps, estimator and autocast precision), and once exactly, in full precision (`EXACT_SETTINGS`:
a tight forward solve, then the implicit gradient from a tight GMRES solve of the backward's
linear system). Their cosine and
relative error go in the step's row. BatchNorm statistics and the RNG are put back afterwards,
so the run trains exactly as it would without the check.

The check measures the task loss's gradient: a Jacobian penalty's own gradient (``[deq]
jac_reg_weight``) is not part of it, and no penalty is computed while checking.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deqbench.execution.distributed import SINGLE, Dist, all_reduce
from deqbench.gradients.reference import EXACT_SETTINGS, vector_agreement
from deqbench.models import Model
from deqbench.stats import DEQStats

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class GradCheck:
    """One check: the run's gradient against the exact one, and how exact the exact one is."""

    cosine: float
    rel_error: float  #: ‖used − exact‖ / ‖exact‖
    exact_f_residual: float  #: worst relative residual of the exact forward solve
    exact_b_residual: float | None  #: worst relative residual of its backward solve
    seconds: float  #: wall time of the check (both gradients)

    def columns(self) -> dict[str, Any]:
        """The step row's columns."""
        return {
            "grad_cosine": self.cosine,
            "grad_rel_error": self.rel_error,
            "grad_exact_f_residual": self.exact_f_residual,
            "grad_exact_b_residual": self.exact_b_residual,
        }


def due(step: int, steps: int, every: int) -> bool:
    """Whether step ``step`` (from 0) of ``steps`` is checked: every ``every``-th step
    (``every`` = 0: none of them) and the last one."""
    return step == steps - 1 or (every > 0 and (step + 1) % every == 0)


def check_gradient(
    model: Model,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    autocast: Callable[[], Any],
    loss_scale: float = 1.0,
    dist: Dist = SINGLE,
) -> GradCheck:
    """The run's gradient of ``loss_fn(model(x), y)`` against the exact implicit gradient.

    ``autocast()`` gives the run's autocast context; ``loss_scale`` is its grad scaler's scale
    (fp16), applied and taken out again as the run's step does. Under torch.distributed
    (``dist``) both gradients are averaged over the ranks, as DDP averages the run's.
    """
    if model.deq is None:
        raise ValueError("only an implicit model has an exact implicit gradient")
    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = list(model.buffers())  # BatchNorm's running statistics and batch counts
    saved = [b.clone() for b in buffers]
    devices = [x.device] if x.device.type == "cuda" else []

    def gradient(cast: Callable[[], Any], **settings: Any) -> tuple[Tensor, DEQStats]:
        # Each call starts from the same RNG state (the same dropout masks) and buffers.
        with torch.random.fork_rng(devices=devices), model.deq.overridden(**settings):
            with cast():
                logits = model(x)
            loss = loss_fn(logits, y) * loss_scale
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            stats = model.deq.stats
        for buffer, value in zip(buffers, saved, strict=True):
            buffer.copy_(value)
        flat = _flatten(grads, params) / loss_scale
        if dist.enabled:
            flat = all_reduce(flat) / dist.world_size
        return flat, stats

    used, _ = gradient(autocast)
    exact, stats = gradient(contextlib.nullcontext, **EXACT_SETTINGS)  # in full precision
    agree = vector_agreement(used, exact)
    assert stats.forward is not None
    backward = stats.backward
    return GradCheck(
        agree.cosine,
        agree.rel_error,
        stats.forward.rel_residual,
        backward.rel_residual if backward is not None else None,
        time.perf_counter() - start,
    )


def _flatten(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """One float64 vector of every parameter's gradient (zeros where one has none)."""
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).detach().flatten().double()
            for g, p in zip(grads, params, strict=True)
        ]
    )
