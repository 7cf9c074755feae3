"""The Monitor every built-in solver records its evaluations with, on both of its paths: NumPy
bookkeeping on the host and device ops (what runs on CUDA). Statuses, step counts and best
steps must agree exactly; iterates to rounding (the solvers' small systems go through NumPy's
LAPACK on one path and torch's on the other)."""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch

from deqbench.solvers import BUILTIN, Monitor, MonitorMisuse
from deqbench.solvers import base as solver_base
from deqbench.testing.solvers import cell_problem

DT = torch.float64
HOST = pytest.mark.parametrize("host", [True, False], ids=["host", "device"])
FACTORIES = {name: factory for name, factory, _ in BUILTIN}


def observe_all(monitor: Monitor, rows):
    for z, fz in rows:
        done = monitor.observe(z, fz, fz - z)
    return done, monitor.result()


@HOST
def test_traces_best_iterate_and_status(host):
    z0 = torch.zeros(2, 2, dtype=DT)
    mon = Monitor(z0, budget=4, tol=0.1, stop_mode="abs", divergence=1e4, host=host)
    one = torch.ones(2, 2, dtype=DT)
    rows = [
        (z0, one),  # residual √2 for both
        (one, one * 1.5),  # 0.5·√2 = 0.71
        (one * 2, one * 2.01),  # 0.014: both converge at step 2
    ]
    done, result = observe_all(mon, rows)
    assert done
    assert result.nfe == 3
    assert result.sample_status.tolist() == [0, 0]
    assert result.best_step.tolist() == [2, 2]
    assert result.nstep.tolist() == [2, 2]
    torch.testing.assert_close(result.z, one * 2)
    expected = torch.tensor([1.0, 0.5, 0.01], dtype=DT) * 2**0.5
    torch.testing.assert_close(result.abs_trace[:, 0], expected)


@HOST
def test_relative_residual_and_frozen_rows(host):
    z0 = torch.zeros(2, 1, dtype=DT)
    mon = Monitor(z0, budget=5, tol=1e-3, stop_mode="rel", divergence=1e4, host=host)
    fz = torch.tensor([[1.0], [1.0]], dtype=DT)
    mon.observe(z0, fz, fz - z0)  # rel residual 1 for both
    z1 = torch.tensor([[1.0], [0.5]], dtype=DT)
    fz1 = torch.tensor([[1.0], [1.0]], dtype=DT)  # sample 0 is a fixed point
    mon.observe(z1, fz1, fz1 - z1)
    assert mon.active.tolist() == [False, True]
    z2 = torch.tensor([[7.0], [0.75]], dtype=DT)  # sample 0 moved although stopped: ignored
    fz2 = torch.tensor([[9.0], [1.0]], dtype=DT)
    mon.observe(z2, fz2, fz2 - z2)
    result = mon.result()
    assert result.rel_trace[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert result.rel_trace[:, 1].tolist() == [1.0, 0.5, 0.25]
    assert result.nstep.tolist() == [1, 2]
    assert result.z[:, 0].tolist() == [1.0, 0.75]


@HOST
def test_best_iterates_from_different_steps(host):
    # Sample 0 is best at step 1, sample 1 at step 2: the returned rows come from both.
    z0 = torch.zeros(2, 1, dtype=DT)
    mon = Monitor(z0, budget=3, tol=1e-9, stop_mode="abs", divergence=1e4, host=host)
    for z, r in ((0.0, (4.0, 4.0)), (1.0, (1.0, 2.0)), (2.0, (3.0, 1.0))):
        zz = torch.full((2, 1), z, dtype=DT)
        mon.observe(
            zz, zz + torch.tensor([[r[0]], [r[1]]], dtype=DT), torch.tensor([r], dtype=DT).T
        )
    result = mon.result()
    assert result.best_step.tolist() == [1, 2]
    assert result.z[:, 0].tolist() == [1.0, 2.0]
    assert result.sample_status.tolist() == [1, 1]  # max_iter


@HOST
def test_hold_diverged_keeps_only_diverged_rows(host):
    z0 = torch.zeros(3, 2, dtype=DT)
    mon = Monitor(z0, budget=4, tol=1e-3, stop_mode="abs", divergence=10.0, host=host)
    new = torch.ones(3, 2, dtype=DT)
    if host:
        assert mon.hold_diverged(new, z0) is new  # nothing diverged: no select at all
    mon.observe(z0, new, new)  # residual √2 for all
    fz = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1e3, 1e3]], dtype=DT)
    mon.observe(z0, fz, fz)  # sample 0 converges, sample 2 diverges, sample 1 runs on
    assert mon.result().sample_status.tolist() == [0, 1, 2]
    held = mon.hold_diverged(torch.full((3, 2), 5.0, dtype=DT), z0)
    assert held[:, 0].tolist() == [5.0, 5.0, 0.0]  # a converged sample may move on


@HOST
def test_divergence_factor_is_relative_to_the_lowest_residual(host):
    z0 = torch.zeros(1, 1, dtype=DT)
    mon = Monitor(z0, budget=5, tol=1e-9, stop_mode="abs", divergence=100.0, host=host)
    for r in (1.0, 0.01, 0.5, 2.0):  # 2.0 > 100 × 0.01
        fz = torch.full((1, 1), r, dtype=DT)
        mon.observe(z0, fz, fz)
    assert mon.result().sample_status.tolist() == [2]
    assert mon.result().nstep.tolist() == [3]


@HOST
def test_no_divergence_bound_survives_a_zero_residual(host):
    # divergence = inf (a fixed-depth stack): 0·inf must not turn the bound into NaN.
    z0 = torch.zeros(1, 1, dtype=DT)
    mon = Monitor(z0, budget=3, tol=1e-30, stop_mode="abs", divergence=math.inf, host=host)
    for r in (0.0, 5.0, 1.0):
        mon.observe(z0, torch.full((1, 1), r, dtype=DT), torch.full((1, 1), r, dtype=DT))
    assert mon.result().sample_status.tolist() == [0]  # converged at step 0, never diverged


def test_a_start_that_is_the_answer_is_returned_as_a_copy():
    z0 = torch.ones(2, 2)
    mon = Monitor(z0, budget=1, tol=1e-3, stop_mode="abs", divergence=1e4)
    mon.observe(z0, z0.clone(), torch.zeros(2, 2))
    result = mon.result()
    assert result.z is not z0
    torch.testing.assert_close(result.z, z0)


def test_host_bookkeeping_needs_cpu_tensors():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="CPU"):
        Monitor(torch.zeros(1, 1, device="cuda"), 2, 1e-3, "abs", 1e4, host=True)


# -- whole solves: the device path gives the host path's answer ------------------------------


def _staggered_problem():
    """A tanh cell whose samples converge at different steps, plus one whose residual grows
    tenfold per call of ``f`` (a fresh problem per solve: the growth is counted in calls)."""
    f, z0 = cell_problem(
        "tanh", batch=6, dim=32, spectrum="symmetric", spectral_norm=0.95, dtype=DT
    )
    push = torch.zeros(6, 32, dtype=DT)
    push[-1] = 1.0
    growth = torch.ones((), dtype=DT)

    def g(z):
        growth.mul_(10)
        return f(z) + growth * push

    return g, z0


@pytest.mark.parametrize("name", [name for name, *_ in BUILTIN if name != "gmres"])
def test_solvers_agree_on_both_paths(name, monkeypatch):
    factory = FACTORIES[name]
    kwargs = {"max_iter": 200, "tol": 1e-8, "stop_mode": "rel"}
    host = factory()(*_staggered_problem(), **kwargs)
    monkeypatch.setattr(solver_base, "Monitor", functools.partial(Monitor, host=False))
    device = factory()(*_staggered_problem(), **kwargs)
    assert host.sample_status.tolist()[-1] == 2  # the expansive sample diverged
    assert len(set(host.nstep.tolist()[:-1])) > 1  # the others stopped at different steps
    # The device path may run a step past the last sample's stop (its done-flag lags).
    assert device.nfe >= host.nfe
    for field in ("sample_status", "nstep", "best_step"):
        assert getattr(device, field).tolist() == getattr(host, field).tolist(), field
    n = host.nfe
    torch.testing.assert_close(device.abs_trace[:n], host.abs_trace, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(device.z, host.z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["fixed-point", "anderson", "broyden"])
def test_bfloat16_states_take_the_torch_paths(name):
    # The compiled kernels take float32 and float64; other dtypes fall back to torch ops.
    factory = FACTORIES[name]
    f, z0 = cell_problem("tanh", batch=4, dim=16, spectral_norm=0.5, dtype=torch.bfloat16)
    result = factory()(f, z0, max_iter=50, tol=3e-2)
    assert result.status.value == "converged", result.message
    assert result.z.dtype == torch.bfloat16
    assert result.abs_trace.dtype == torch.float32


@pytest.mark.parametrize("name", ["fixed-point", "anderson", "broyden"])
def test_a_map_of_the_wrong_shape_is_an_error(name):
    # The compiled kernels do not check bounds: the shapes are checked before them.
    factory = FACTORIES[name]
    with pytest.raises((ValueError, RuntimeError), match=r"size|shape"):
        factory()(lambda z: z[:, :-1], torch.zeros(2, 4), max_iter=5)


@HOST
def test_iterates_written_into_reused_buffers_keep_their_best_rows(host):
    # A solver writes each iterate into one of two buffers by turns. On the host the monitor
    # holds best rows by reference, so a buffer must give them up before it is written again.
    z0 = torch.zeros(2, 1, dtype=DT)
    mon = Monitor(z0, budget=6, tol=1e-9, stop_mode="abs", divergence=1e4, host=host)

    def step(z, value, residuals):
        buf = mon.next_iterate(z)
        assert buf is not z and buf is not z0
        buf.copy_(torch.tensor([value], dtype=DT).T)
        mon.observe(buf, buf + torch.tensor([residuals], dtype=DT).T)
        return buf

    mon.observe(z0, z0 + 4)
    a = step(z0, (1.0, 1.0), (2.0, 2.0))  # both best here
    b = step(a, (2.0, 2.0), (3.0, 1.0))  # sample 1 improves, sample 0 keeps its row in `a`
    c = step(b, (3.0, 3.0), (3.0, 3.0))  # nothing improves: `a` is written over
    assert c is a
    step(c, (4.0, 4.0), (3.0, 3.0))  # nothing improves: `b` is written over
    result = mon.result()
    assert result.best_step.tolist() == [1, 2]
    assert result.z[:, 0].tolist() == [1.0, 2.0]


# -- misuse: one clear error naming the rule, before anything reaches a compiled loop --------


def _small(host, budget=3, divergence=1e4):
    z0 = torch.zeros(2, 4, dtype=DT)
    return z0, Monitor(z0, budget, 1e-9, "abs", divergence, host=host)


@HOST
def test_observing_past_the_budget_is_a_misuse(host):
    # The host traces hold `budget` rows: one more observe wrote past them ("free(): invalid
    # next size", the process gone).
    z0, mon = _small(host, budget=2)
    fz = z0 + 1
    assert not mon.observe(z0, fz)
    assert mon.observe(z0, fz)  # the budget is spent: the solver must return now
    rule = r"evaluation 3 is outside the budget of 2 evaluations \(rule 1: return as soon"
    with pytest.raises(MonitorMisuse, match=rule):
        mon.observe(z0, fz)
    with pytest.raises(MonitorMisuse, match=rule):
        mon.observe_norms(z0)
    mon.budget = 10  # a public field; raising it does not lengthen the traces
    with pytest.raises(MonitorMisuse, match="budget of 2"):
        mon.observe(z0, fz, fz - z0)
    assert mon.result().nfe == 2 and mon.result().abs_trace.shape == (2, 2)


UNLIKE = {
    "batch": lambda: torch.zeros(3, 4, dtype=DT),
    "dim": lambda: torch.zeros(2, 5, dtype=DT),
    "flat": lambda: torch.zeros(8, dtype=DT),
    "dtype": lambda: torch.zeros(2, 4, dtype=torch.float32),
    "device": lambda: torch.zeros(2, 4, dtype=DT, device="meta"),
    "not-a-tensor": lambda: torch.zeros(2, 4, dtype=DT).numpy(),
}


@HOST
@pytest.mark.parametrize("unlike", UNLIKE.values(), ids=UNLIKE)
@pytest.mark.parametrize("arg", ["z", "fz", "g", "observe_norms"])
def test_an_argument_unlike_z0_is_a_misuse(host, unlike, arg):
    z0, mon = _small(host)
    args = {"z": z0.clone(), "fz": z0 + 1, "g": torch.ones_like(z0)}
    name = {"fz": "f(z)", "observe_norms": "z"}.get(arg, arg)
    rule = re.escape(f"{name} must have z0's shape, dtype and device, (2, 4) torch.float64 on cpu")
    with pytest.raises(MonitorMisuse, match=rule + r".*\(rule 1: observe each evaluation"):
        if arg == "observe_norms":
            mon.observe_norms(unlike())
        else:
            mon.observe(**{**args, arg: unlike()})
    assert mon.nfe == 0  # nothing was recorded: the monitor is as it was
    assert not mon.observe(**args)


@HOST
def test_observe_norms_without_the_norms_is_a_misuse(host):
    z0, mon = _small(host)
    with pytest.raises(MonitorMisuse, match=r"monitor\.norms holds no norms for this evaluation"):
        mon.observe_norms(z0)  # the buffer starts at −1: never written
    assert mon.nfe == 0
    mon.norms.copy_(torch.tensor([[3.0, 4.0], [6.0, 8.0]]))
    assert not mon.observe_norms(z0)
    assert mon.result().rel_trace[0].tolist() == [0.5, 0.5]
    if host:  # the compiled loop checks every evaluation; a device only the first
        mon.norms[0, 1] = -1.0
        with pytest.raises(MonitorMisuse, match="negative"):
            mon.observe_norms(z0)
        assert mon.nfe == 1 and mon.result().abs_trace.shape == (1, 2)


@HOST
def test_result_before_any_observation_is_a_misuse(host):
    _, mon = _small(host)
    with pytest.raises(MonitorMisuse, match="result: no evaluation was observed"):
        mon.result()


@HOST
def test_hold_diverged_takes_steps_like_z0(host):
    z0, mon = _small(host, divergence=10.0)
    mon.observe(z0, z0 + 1)
    mon.observe(z0, torch.tensor([[1.0] * 4, [1e3] * 4], dtype=DT))  # sample 1 diverges
    assert mon.result().sample_status.tolist() == [1, 2]
    rule = r".*\(rule 2: hold diverged samples"
    with pytest.raises(MonitorMisuse, match=r"hold_diverged: new must .*got a \(1, 4\)" + rule):
        mon.hold_diverged(torch.zeros(1, 4, dtype=DT), z0)
    with pytest.raises(MonitorMisuse, match=r"hold_diverged: old must .*got .*float32" + rule):
        mon.hold_diverged(torch.zeros(2, 4, dtype=DT), z0.float())
    held = mon.hold_diverged(torch.full((2, 4), 5.0, dtype=DT), z0)
    assert held[:, 0].tolist() == [5.0, 0.0]


@HOST
def test_strided_arguments_are_read_through_their_strides(host):
    # Not a misuse: the compiled loops index through strides, so views of other layouts (a
    # map's transposed product, a slot of a history) give the contiguous answer.
    gen = torch.Generator().manual_seed(0)
    z0 = torch.zeros(3, 4, dtype=DT)
    steps = [torch.randn(4, 3, generator=gen, dtype=DT).T for _ in range(3)]  # (3, 4), strided
    images = [torch.randn(3, 8, generator=gen, dtype=DT)[:, ::2] for _ in range(3)]
    results = []
    for layout in (lambda t: t, torch.Tensor.contiguous):
        mon = Monitor(z0, 3, 1e-12, "rel", 1e4, host=host)
        for i, (z, fz) in enumerate(zip(steps, images, strict=True)):
            g = layout(fz) - layout(z) if i == 1 else None
            mon.observe(layout(z), layout(fz), g)
        results.append(mon.result())
    strided, contiguous = results
    assert not steps[0].is_contiguous() and not images[0].is_contiguous()
    torch.testing.assert_close(strided.abs_trace, contiguous.abs_trace, rtol=1e-12, atol=0)
    torch.testing.assert_close(strided.rel_trace, contiguous.rel_trace, rtol=1e-12, atol=0)
    torch.testing.assert_close(strided.z, contiguous.z, rtol=0, atol=0)
    assert strided.best_step.tolist() == contiguous.best_step.tolist()
