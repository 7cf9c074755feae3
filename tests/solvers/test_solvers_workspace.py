"""The buffers a solver keeps between solves on the CPU (`deqbench.solvers.workspace`)."""

from __future__ import annotations

import copy
import gc
import pickle
import threading

import pytest
import torch

from deqbench.measure.timing import LiveTensorMeter
from deqbench.solvers import Anderson, Broyden, FixedPoint, Workspace
from deqbench.solvers.gmres import GMRES

Z = torch.zeros(4, 8)


def test_a_lease_reuses_the_last_solves_buffers_by_name_and_shape():
    ws = Workspace()
    with ws.lease(Z) as scratch:
        a, b = scratch.empty("a", 3, 8), scratch.empty("b", 3, 8)
    assert a.data_ptr() != b.data_ptr() and ws.nbytes == 2 * 3 * 8 * 4
    with ws.lease(Z) as scratch:
        assert scratch.empty("a", 3, 8).data_ptr() == a.data_ptr()
        assert scratch.empty("b", 5, 8).data_ptr() != b.data_ptr()  # another shape: fresh
    assert ws.nbytes == (3 + 5) * 8 * 4  # only what the last solve used is kept
    with ws.lease(Z.double()) as scratch:  # another dtype: fresh
        assert scratch.empty("a", 3, 8).dtype == torch.float64
    ws.clear()
    assert ws.nbytes == 0


def test_clear_during_a_solve_neither_blocks_nor_drops_that_solves_buffers():
    ws = Workspace()
    with ws.lease(Z) as scratch:
        a = scratch.empty("a", 2)
        ws.clear()  # from inside f, say: the lease is held on this thread
    with ws.lease(Z) as scratch:
        assert scratch.empty("a", 2).data_ptr() == a.data_ptr()


def test_a_name_is_taken_once_per_solve():
    with Workspace().lease(Z) as scratch:
        scratch.empty("a", 2)
        with pytest.raises(ValueError, match=r"'a'.*already taken"):
            scratch.empty("a", 2)


def test_a_busy_workspace_hands_out_fresh_buffers_and_keeps_the_holders():
    ws = Workspace()
    with ws.lease(Z) as outer:
        a = outer.empty("a", 2)
        with ws.lease(Z) as inner:  # a solve nested in f, or another thread's
            assert inner.empty("a", 2).data_ptr() != a.data_ptr()
    with ws.lease(Z) as scratch:
        assert scratch.empty("a", 2).data_ptr() == a.data_ptr()


def test_nothing_is_kept_off_the_cpu():
    ws = Workspace()
    with ws.lease(torch.zeros(4, 8, device="meta")) as scratch:
        assert scratch.empty("a", 2).device.type == "meta"
    assert ws.nbytes == 0


def test_copies_and_pickles_of_a_solver_start_empty():
    s = Anderson(m=3)
    s(lambda z: 0.5 * z + 1, torch.zeros(2, 4))
    assert s.workspace.nbytes > 0
    for other in (copy.deepcopy(s), pickle.loads(pickle.dumps(s)), copy.copy(s)):
        assert other == s and other.workspace.nbytes == 0 and other.workspace is not s.workspace


def _problem(dim: int = 4096, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=gen) / dim**0.5 * 0.6
    b = torch.randn(8, dim, generator=gen)
    return (lambda z: torch.tanh(z @ w.T + b)), torch.zeros_like(b)


@pytest.mark.parametrize(
    "solver",
    [Anderson(), Broyden(), Broyden(line_search=True), GMRES(restart=6)],
    ids=["anderson", "broyden", "broyden-ls", "gmres"],
)
def test_a_second_solve_allocates_no_history(solver):
    f, z0 = _problem()
    if isinstance(solver, GMRES):  # affine maps only
        w = torch.randn(z0.shape[1], z0.shape[1]) * 0.3 / z0.shape[1] ** 0.5
        f = lambda z: z @ w.T + 1  # noqa: E731
    # The drop in peak is the workspace to the byte here, but once in CI it came out 64 bytes
    # over (never reproduced, with or without the kernels compiling inside the solve). So a
    # copy, with a workspace of its own, solves first, and no kernel compiles in the measured
    # solves; the collector is off in them, lest other tests' finalisers run in the meter's
    # sight; and the check allows 1 KiB, far below any history buffer (a row is 16 KiB).
    copy.copy(solver)(f, z0, max_iter=30, tol=1e-5)
    peaks, results = [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            meter = LiveTensorMeter()
            with meter:
                results.append(solver(meter.exclude(f), z0, max_iter=30, tol=1e-5))
            peaks.append(meter.peak)
    finally:
        gc.enable()
    state = z0.numel() * z0.element_size()
    assert solver.workspace.nbytes >= 2 * state  # at least a history of two states is kept
    assert abs(peaks[0] - peaks[1] - solver.workspace.nbytes) <= 1024, peaks
    assert torch.equal(results[0].z, results[1].z) and results[0].nfe == results[1].nfe


def test_solves_nested_in_f_and_in_threads_get_their_own_buffers():
    solver = Anderson()
    f_in, z_in = _problem(256, seed=1)
    inner_answer = Anderson()(f_in, z_in, max_iter=100, tol=1e-6).z
    f_out, z_out = _problem(256, seed=2)
    outer_answer = Anderson()(f_out, z_out, max_iter=100, tol=1e-6).z

    def nested(z):  # the same solver instance, inside its own f
        assert torch.equal(solver(f_in, z_in, max_iter=100, tol=1e-6).z, inner_answer)
        return f_out(z)

    assert torch.equal(solver(nested, z_out, max_iter=100, tol=1e-6).z, outer_answer)

    failures = []

    def worker(f, z0, answer):
        for _ in range(5):
            if not torch.equal(solver(f, z0, max_iter=100, tol=1e-6).z, answer):
                failures.append(answer)

    threads = [
        threading.Thread(target=worker, args=args)
        for args in ((f_in, z_in, inner_answer), (f_out, z_out, outer_answer))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_fixed_point_keeps_nothing():
    s = FixedPoint()
    s(lambda z: 0.5 * z + 1, torch.zeros(2, 4))
    assert s.workspace.nbytes == 0
