"""Every registered solver passes the conformance kit; and the kit can fail."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch

from deqbench import get_registry
from deqbench.execution.worker import run_isolated
from deqbench.solvers import BUILTIN, FixedPoint, Monitor, Solver
from deqbench.solvers import base as solver_base
from deqbench.solvers.base import Fn
from deqbench.testing import check_solver, run_solver_check, solver_conformance_params
from deqbench.testing.solvers import CHECKS, skipped_checks

NAMES = get_registry().names("solvers")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("solver", "check"), solver_conformance_params(*NAMES))
def test_registered_solver_conforms(solver, check, dtype):
    run_solver_check(solver, check, dtype=dtype)


@pytest.mark.parametrize("name", [name for name, *_ in BUILTIN])
def test_builtins_conform_with_device_bookkeeping(name, monkeypatch):
    # The path CUDA runs (device ops, a lagged done-flag), here on the CPU.
    monkeypatch.setattr(solver_base, "Monitor", functools.partial(Monitor, host=False))
    assert check_solver(name)


def test_every_builtin_is_checked():
    assert {"fixed-point", "anderson", "broyden"} <= set(NAMES)


def test_check_solver_runs_every_applicable_check():
    assert check_solver("anderson") == list(CHECKS)
    assert check_solver(FixedPoint(beta=0.9), dtype=torch.float32) == list(CHECKS)


def test_affine_only_solvers_skip_the_nonlinear_checks():
    @dataclass(kw_only=True)
    class Affine(FixedPoint):
        affine_only = True

    assert set(skipped_checks(Affine())) == {"divergence", "scale", "held"}
    assert "scale" not in check_solver(Affine())


def test_unknown_deviation_names_are_rejected():
    @dataclass(kw_only=True)
    class Odd(FixedPoint):
        known_deviations: ClassVar[dict[str, str]] = {"speed": "too fast"}

    with pytest.raises(ValueError, match="speed"):
        skipped_checks(Odd())


# -- the kit catches broken solvers ---------------------------------------------------------


@dataclass(kw_only=True)
class Lazy(Solver):
    """Observes the start and stops: never moves."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        while not monitor.observe(z0, f(z0), f(z0) - z0):
            pass


@dataclass(kw_only=True)
class Greedy(FixedPoint):
    """One call of f too many."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        f(z0)
        super().solve(f, z0, monitor)


@dataclass(kw_only=True)
class Touchy(FixedPoint):
    """Raises when the iterates grow large, instead of reporting divergence."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        def strict(z):
            if float(z.abs().max()) > 1e6:
                raise FloatingPointError("overflow ahead")
            return f(z)

        super().solve(strict, z0, monitor)


@dataclass(kw_only=True)
class BatchStop(FixedPoint):
    """Moves every sample until all converge and reports one step count for all."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        z = z0
        while True:
            fz = f(z)
            done = monitor.observe(z, fz, fz - z)
            monitor.nstep.fill_(monitor.nfe - 1)
            if done:
                return
            z = fz


@dataclass(kw_only=True)
class Sticky(FixedPoint):
    """Iterates in a kept buffer, so its result is the memory the next solve writes."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        buffers = [monitor.buffer(f"iterate-{i}", *z0.shape) for i in range(2)]
        z = z0
        while True:
            fz = f(z)
            if monitor.observe(z, fz):
                return
            z = buffers[monitor.nfe % 2]
            monitor.release(z)
            z.copy_(fz)


@dataclass(kw_only=True)
class InPlace(Solver):
    """Fixed-point iteration in one buffer: it writes each step into the z it just observed,
    without monitor.release (rule 1), so the best iterate the monitor holds there is lost."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        z = z0.clone()
        while True:
            fz = f(z)
            if monitor.observe(z, fz):
                return
            z.copy_(monitor.hold_diverged(fz, z))


@dataclass(kw_only=True)
class Unheld(Solver):
    """Fixed-point iteration that never calls hold_diverged (rule 2): a diverged sample goes on
    moving with the batch."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        z = z0
        while True:
            fz = f(z)
            if monitor.observe(z, fz):
                return
            z = fz


@pytest.mark.parametrize(
    ("solver", "check", "message"),
    [
        (Lazy(), "linear", "linear"),
        (Greedy(), "budget", "calls"),
        (Touchy(), "divergence", "raised"),
        (BatchStop(), "per_sample", "nstep"),
        (Sticky(), "repeat", "overwrote"),
        (InPlace(), "reported", r"residuals .*reports .*monitor\.release\(z\) first \(rule 1\)"),
        (Unheld(), "held", r"new point .*hold_diverged\(step, z\) \(rule 2\)"),
    ],
    ids=["lazy", "greedy", "touchy", "batch-stop", "sticky", "in-place", "unheld"],
)
def test_the_kit_fails_broken_solvers(solver, check, message):
    with pytest.raises(AssertionError, match=message):
        run_solver_check(solver, check)
    with pytest.raises(AssertionError, match=check):
        check_solver(solver)


def test_the_kit_fails_an_absolute_ridge_on_scale():
    pytest.importorskip("torchdeq")
    with pytest.raises(AssertionError, match="scale 1, 1e-3, 1e3"):
        run_solver_check("torchdeq-anderson", "scale")


def test_the_in_place_solver_returns_a_z_its_result_misdescribes():
    # What `reported` catches: on the alternating map the best iterate (relative residual
    # 1/2) was overwritten by the last one (1), but the result still reports 1/2.
    a = torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = InPlace()(lambda z: 3 * a - z, a.clone(), max_iter=20, tol=1e-12)
    fz = 3 * a - result.z
    true = torch.linalg.vector_norm(fz - result.z, dim=1) / torch.linalg.vector_norm(fz, dim=1)
    torch.testing.assert_close(result.rel_residual, torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(true, torch.ones(3, dtype=torch.float64))


@dataclass(kw_only=True)
class PastBudget(Solver):
    """The issue's plugin: its loop ignores what observe returns and counts evaluations itself,
    one too many, so it observes once past its budget."""

    def solve(self, f: Fn, z0, monitor: Monitor) -> None:
        z = z0
        while monitor.nfe <= monitor.budget:
            fz = f(z)
            monitor.observe(z, fz)
            z = monitor.hold_diverged(fz, z)


def _check_in_worker(emit, solver: Solver) -> str:
    try:
        check_solver(solver)
    except AssertionError as exc:
        return str(exc)
    return "passed"


def test_the_kit_fails_a_solver_that_observes_past_its_budget():
    # In a worker: before the monitor checked the budget, the compiled loop wrote past the end
    # of its traces and the process died of "free(): invalid next size" (SIGABRT, rc 134).
    outcome = run_isolated(_check_in_worker, (PastBudget(),), timeout_s=300)
    assert outcome.status == "ok", outcome.error
    message = outcome.value
    assert "fails 'linear': misused its monitor: observe: evaluation 501 is outside the " in message
    assert "budget of 500 evaluations (rule 1: return as soon as observe returns True)" in message


@dataclass(kw_only=True)
class ThreadRecorder(FixedPoint):
    """Fixed-point iteration that notes how many torch threads each solve ran on."""

    seen: set = field(default_factory=set)

    def solve(self, f: Fn, z0: torch.Tensor, monitor: Monitor) -> None:
        self.seen.add(torch.get_num_threads())
        super().solve(f, z0, monitor)


def test_a_check_runs_on_one_thread_and_restores_the_callers():
    solver, before = ThreadRecorder(), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_solver_check(solver, "per_sample")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert solver.seen == {1}
