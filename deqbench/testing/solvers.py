"""Conformance kit for root solvers: ``check_solver("my-solver")``.

It holds a solver (by registered name, or an instance) to what the rest of deqbench relies on,
each a plain function that raises AssertionError saying what went wrong:

- ``linear``: converges on contractive affine maps to ``torch.linalg.solve``'s answer;
- ``budget``: never calls ``f`` more than ``max_iter`` times, and says ``max_iter`` when the
  tolerance is out of reach;
- ``tolerance``: a sample marked converged has a residual ≤ tol, recomputed at the returned
  ``z``, and the reported residual does not understate it (``abs`` and ``rel``);
- ``record``: the result's shapes, dtypes and counts agree (traces ``(T, B)``, ``T ≤ nfe``);
- ``divergence``: a map whose residual blows up is reported ``diverged``, without raising, and
  the returned ``z`` is finite;
- ``scale``: the same problem at scale 1e-3 and 1e3 (``f_s(z) = s·f(z/s)``) takes the same number
  of evaluations within ±10%;
- ``tiny``: the affine backward-like system ``z = Jᵀz + v`` with ``v`` ≈ 1e-6 converges from a
  zero start, and the answer returned is not the zero start;
- ``per_sample``: in a batch of an easy and a hard sample the easy one stops first, right;
- ``repeat``: one instance solving two problems in turn leaves the first result untouched
  (buffers kept between solves must never hold a result), and solving the first again gives
  the first answer (nothing left from an earlier solve steers a later one);
- ``reported``: on an alternating map, where the best iterate is not the last, the returned
  ``z``'s residuals, recomputed, are the ones the result reports: the iterate the monitor
  holds was never written into without ``monitor.release`` (rule 1 of the solver guide);
- ``held``: once a sample diverged, ``f`` only sees it at points it was evaluated at before,
  while a converging sample beside it goes on: every step went through
  ``monitor.hold_diverged`` (rule 2).

A solver that misuses its monitor (`MonitorMisuse`: an evaluation past the budget, an iterate
of the wrong shape, ...) fails the check it was in, with the monitor's message.

Two class attributes of the solver steer it: ``affine_only = True`` (see `Solver`) skips the
checks on nonlinear maps (``divergence``, ``scale``); ``known_deviations``, a mapping of check
name to reason, skips checks a solver is known to fail, and says why (adapters of other
libraries use it; a new solver should not need it).

The checks are in `deqbench.testing.solver_checks` and the maps they solve in
`deqbench.testing.solver_problems`; this module runs them (and re-exports the checks
and `cell_problem`).

In pytest::

    @pytest.mark.parametrize(("solver", "check"), solver_conformance_params("my-solver"))
    def test_conformance(solver, check):
        run_solver_check(solver, check)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from deqbench.solvers.base import Solver
from deqbench.solvers.monitor import MonitorMisuse
from deqbench.testing.solver_checks import (
    check_budget,
    check_divergence,
    check_held,
    check_linear,
    check_per_sample,
    check_record,
    check_repeat,
    check_reported,
    check_scale,
    check_tiny,
    check_tolerance,
)
from deqbench.testing.solver_problems import cell_problem, fail, name_of, resolve

Check = Callable[..., None]
NONLINEAR = ("divergence", "scale", "held")  # the checks an affine-only solver skips


CHECKS: dict[str, Check] = {
    "linear": check_linear,
    "budget": check_budget,
    "tolerance": check_tolerance,
    "record": check_record,
    "divergence": check_divergence,
    "scale": check_scale,
    "tiny": check_tiny,
    "per_sample": check_per_sample,
    "repeat": check_repeat,
    "reported": check_reported,
    "held": check_held,
}


def skipped_checks(solver: str | Solver) -> dict[str, str]:
    """The checks that do not apply to ``solver``, with the reason for each."""
    s = resolve(solver)
    skip = dict(getattr(type(s), "known_deviations", {}))
    if getattr(type(s), "affine_only", False):
        skip.update({c: "affine-only solver; the check's map is nonlinear" for c in NONLINEAR})
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"known_deviations names unknown checks: {sorted(unknown)}")
    return skip


@contextlib.contextmanager
def _one_cpu_thread(device: Any) -> Iterator[None]:
    """Run the block on one torch thread when ``device`` is the CPU, then restore the count.

    The kit's problems hold a few thousand numbers, too few for threads to pay. On cores that
    other work kept busy, torch's default pool, spinning between ops, made one check take
    seconds instead of milliseconds.
    """
    threads = torch.get_num_threads()
    if threads == 1 or torch.device(device).type != "cpu":
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_solver_check(
    solver: str | Solver, check: str, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> None:
    """Run one check by name (see `CHECKS`), on one CPU thread. A `MonitorMisuse` fails it,
    with its message."""
    with torch.no_grad(), _one_cpu_thread(device):
        try:
            CHECKS[check](solver, dtype=dtype, device=device)
        except MonitorMisuse as exc:
            raise fail(name_of(solver), check, f"misused its monitor: {exc}") from exc


def check_solver(
    solver: str | Solver, *, dtype: torch.dtype = torch.float64, device: Any = "cpu"
) -> list[str]:
    """Run every check that applies; returns their names, or raises one AssertionError that
    lists every failure."""
    skip = skipped_checks(solver)
    failures, ran = [], []
    for check in CHECKS:
        if check in skip:
            continue
        try:
            run_solver_check(solver, check, dtype=dtype, device=device)
        except AssertionError as exc:
            failures.append(str(exc))
        ran.append(check)
    if failures:
        raise AssertionError("\n".join(failures))
    return ran


def solver_conformance_params(*names: str) -> list[Any]:
    """``pytest.param(name, check)`` for every check of every named solver; inapplicable ones
    are marked skipped with their reason."""
    import pytest  # only needed by this helper

    params = []
    for name in names:
        skip = skipped_checks(name)
        for check in CHECKS:
            marks = [pytest.mark.skip(reason=skip[check])] if check in skip else []
            params.append(pytest.param(name, check, id=f"{name}-{check}", marks=marks))
    return params


__all__ = [
    "CHECKS",
    "cell_problem",
    "check_budget",
    "check_divergence",
    "check_held",
    "check_linear",
    "check_per_sample",
    "check_record",
    "check_repeat",
    "check_reported",
    "check_scale",
    "check_solver",
    "check_tiny",
    "check_tolerance",
    "run_solver_check",
    "skipped_checks",
    "solver_conformance_params",
]
