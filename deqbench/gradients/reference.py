"""Parameter gradients of a cell's equilibrium loss, and how close an estimator's come to the
exact implicit gradient.

`reference_gradient` solves forward and backward tightly (GMRES for the backward's affine
system), which is the yardstick the benchmark holds every estimator's gradient against.
Dropout masks are redrawn at each call, so compare gradients of a cell in eval mode, or seed
the RNG identically before each call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deqbench.cell import Cell
from deqbench.gradients.base import GradientEstimator
from deqbench.solvers.base import Solver
from deqbench.state import State
from deqbench.stats import DEQStats

LossFn = Callable[[State], Tensor]

#: A tight solve and an exact implicit gradient (float32): `reference_gradient`'s settings, in
#: `deqbench.deq.DEQ`'s names. Training runs check their gradients against these too.
EXACT_SETTINGS: dict[str, Any] = {
    "solver": "anderson",
    "f_max_iter": 200,
    "f_tol": 1e-6,
    "gradient": "ift",
    "b_solver": "gmres",
    "b_max_iter": 200,
    "b_tol": 1e-7,
    "stop_mode": "rel",
    "b_stop_mode": "rel",
}
_X = EXACT_SETTINGS


@dataclass(frozen=True, eq=False)
class CellGradient:
    """Gradients of the loss by parameter name (None: the loss does not depend on it)."""

    grads: dict[str, Tensor | None]
    loss: float
    stats: DEQStats


@dataclass(frozen=True)
class GradientAgreement:
    """An estimate against a reference, over all parameters flattened into one vector."""

    cosine: float  #: 1 is the same direction
    rel_error: float  #: ‖estimate − reference‖ / ‖reference‖


def parameter_gradient(
    cell: Cell,
    x: Tensor,
    loss_fn: LossFn,
    *,
    gradient: str | GradientEstimator = "ift",
    solver: str | Solver = "fixed-point",
    **deq_options: Any,
) -> CellGradient:
    """The gradient ``gradient`` gives for ``loss_fn(DEQ(cell)(x))`` (DEQ options as keywords).

    The cell's own train/eval mode is kept; the estimator is attached in either.
    """
    from deqbench.deq import DEQ  # the layer imports this package; import it late

    deq = DEQ(cell, solver, gradient, keep_graph_in_eval=True, **deq_options)
    deq.training = cell.training  # only the layer's flag: the cell keeps its own mode
    params = {name: p for name, p in cell.named_parameters() if p.requires_grad}
    with torch.enable_grad():
        loss = loss_fn(deq(x))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return CellGradient(dict(zip(params, grads, strict=True)), float(loss.detach()), deq.stats)


def reference_gradient(
    cell: Cell,
    x: Tensor,
    loss_fn: LossFn,
    *,
    solver: str | Solver = _X["solver"],
    f_max_iter: int = _X["f_max_iter"],
    f_tol: float = _X["f_tol"],
    b_solver: str | Solver = _X["b_solver"],
    b_max_iter: int = _X["b_max_iter"],
    b_tol: float = _X["b_tol"],
    stop_mode: str = _X["stop_mode"],
) -> CellGradient:
    """A tightly solved exact implicit gradient (defaults suit float32; use float64 to go
    tighter). Check ``stats`` before trusting it: both solves should report converged.
    """
    return parameter_gradient(
        cell,
        x,
        loss_fn,
        gradient="ift",
        solver=solver,
        b_solver=b_solver,
        f_max_iter=f_max_iter,
        f_tol=f_tol,
        b_max_iter=b_max_iter,
        b_tol=b_tol,
        stop_mode=stop_mode,
    )


def gradient_agreement(
    estimate: Mapping[str, Tensor | None], reference: Mapping[str, Tensor | None]
) -> GradientAgreement:
    """Cosine and relative error over the parameters both name (a missing grad counts as 0)."""
    pairs = []
    for name in reference.keys() | estimate.keys():
        ref, est = reference.get(name), estimate.get(name)
        if ref is None and est is None:
            continue
        like = ref if ref is not None else est
        assert like is not None
        pairs.append(
            (
                (torch.zeros_like(like) if est is None else est).detach().flatten().double(),
                (torch.zeros_like(like) if ref is None else ref).detach().flatten().double(),
            )
        )
    if not pairs:
        raise ValueError("no gradients to compare")
    est_v = torch.cat([p[0].cpu() for p in pairs])
    ref_v = torch.cat([p[1].cpu() for p in pairs])
    return vector_agreement(est_v, ref_v)


def vector_agreement(est_v: Tensor, ref_v: Tensor) -> GradientAgreement:
    """`gradient_agreement` of two flat vectors (NaN where a norm is zero)."""
    ref_norm, est_norm = float(ref_v.norm()), float(est_v.norm())
    denom = ref_norm * est_norm
    cosine = float(est_v @ ref_v) / denom if denom > 0 else math.nan
    rel = float((est_v - ref_v).norm()) / ref_norm if ref_norm > 0 else math.nan
    return GradientAgreement(cosine, rel)
