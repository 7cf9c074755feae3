"""What a solve run with a gradient estimator measures: the time of the backward, its NFE, the
bytes autograd saves, and how close the estimator's parameter gradient comes to the exact one."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from deqbench.deq import DEQ
from deqbench.gradients import CellGradient, gradient_agreement, reference_gradient
from deqbench.measure.memory import SavedTensorsMeter
from deqbench.measure.timing import Timing, cuda_peak, peak_rss_mb, sync
from deqbench.plugins import get_gradient
from deqbench.runs.solve.forward import LiveProblem
from deqbench.solvers import Solver, SolverResult
from deqbench.state import State, pack
from deqbench.stats import DEQStats, SolveStats
from deqbench.suite.solve import Run


def probe_loss(prob: LiveProblem, seed: int = 0):
    """A fixed random linear read-out of the equilibrium: L = mean over samples of w·z*."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(prob.bound.z0.shape[1], generator=gen, dtype=prob.bound.z0.dtype)
    w = w.to(prob.bound.z0.device)

    def loss(state: State) -> Tensor:
        return (pack(state) @ w).mean()

    return loss


def measure_gradient(
    run: Run,
    prob: LiveProblem,
    solver: Solver,
    device: torch.device,
    repeats: int,
    warmup: int,
    references: dict[str, Any],
) -> dict[str, Any]:
    """Forward + backward through a DEQ on the run's problem, against the exact gradient."""
    loss_fn = probe_loss(prob)
    estimator = get_gradient(run.gradient, **run.gradient_options)
    deq = DEQ(
        prob.cell,
        solver,
        estimator,
        f_max_iter=run.iter_cap,
        f_tol=run.tol,
        stop_mode=run.stop_mode,
        keep_graph_in_eval=True,
    )
    named = [(n, p) for n, p in prob.cell.named_parameters() if p.requires_grad]
    names, params = zip(*named, strict=True)

    def step() -> tuple[float, float, tuple[Tensor | None, ...]]:
        sync(device)
        t0 = time.perf_counter()
        loss = loss_fn(deq(prob.x))
        sync(device)
        t1 = time.perf_counter()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        sync(device)
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3, grads

    # The memory pass comes first and alone: the meter's hooks cost time.
    meter = SavedTensorsMeter(ignore=params)
    with cuda_peak(device) as cuda:
        with meter:
            loss = loss_fn(deq(prob.x))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    stats = deq.stats
    for _ in range(warmup):
        step()
    forward_ms, backward_ms = [], []
    for _ in range(repeats):
        fwd, bwd, _ = step()
        forward_ms.append(fwd)
        backward_ms.append(bwd)
    rss_peak = peak_rss_mb()  # the run's own, not the exact gradient's (only one run solves it)

    key = run.problem.name
    if key not in references:
        references[key] = reference_gradient(prob.cell, prob.x, loss_fn)
    reference = references[key]
    agreement = gradient_agreement(dict(zip(names, grads, strict=True)), reference.grads)
    backward = stats.backward
    fwd_t, bwd_t = Timing(tuple(forward_ms)), Timing(tuple(backward_ms))
    steps = Timing(tuple(a + b for a, b in zip(forward_ms, backward_ms, strict=True)))
    row = {
        "forward_ms_median": fwd_t.median_ms,
        "backward_ms_median": bwd_t.median_ms,
        "backward_ms_iqr": bwd_t.iqr_ms,
        "step_ms_median": steps.median_ms,
        "b_nfe": backward.nfe if backward else None,
        "b_status": backward.status.value if backward else "",
        "b_rel_residual_max": backward.rel_residual if backward else None,
        "grad_cosine": agreement.cosine,
        "grad_rel_error": agreement.rel_error,
        "saved_mb": meter.mb,
        "peak_mem_mb": cuda.get("peak_mb"),
        "rss_peak_mb": rss_peak,
    }
    ref_b = reference.stats.backward
    if ref_b is None or ref_b.status.value != "converged":
        row["notes"] = "reference backward not converged: " + (ref_b.message if ref_b else "")
    return row


def reference_on_cpu(reference: CellGradient) -> CellGradient:
    """``reference`` with its tensors detached and on the CPU: what a run's worker pickles for
    the suite to hand to the problem's later runs (no autograd graph comes along, and reading
    it back needs no CUDA)."""

    def result(r: SolverResult) -> SolverResult:
        moved = {
            f.name: getattr(r, f.name).detach().cpu()
            for f in dataclasses.fields(r)
            if isinstance(getattr(r, f.name), Tensor)
        }
        return dataclasses.replace(r, **moved)

    stats = reference.stats
    forward, backward = (
        None if s is None else SolveStats(result(s.result)) for s in (stats.forward, stats.backward)
    )
    jac = None if stats.jac_loss is None else stats.jac_loss.detach().cpu()
    return CellGradient(
        {name: None if g is None else g.detach().cpu() for name, g in reference.grads.items()},
        reference.loss,
        DEQStats(forward, backward, jac),
    )
