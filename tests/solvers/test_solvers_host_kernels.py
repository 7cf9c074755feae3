"""The compiled row kernels against torch on the same inputs, through both of their loops: the
plain one and the one split over threads (which larger states take). Each row is computed the
same way by either loop, so the two must agree bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from deqbench.solvers import host_kernels

B, D, M = 5, 48, 4


def _arrays(dtype, *shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).numpy() for s in shapes]


def _loops(kernel):
    return {"serial": kernel.serial, "threaded": kernel.threaded}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def _close(actual, expected, dtype):
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


def test_residual_norms_and_norms(dtype):
    z, fz = _arrays(dtype, (B, D), (B, D))
    expected = np.stack([np.linalg.norm(fz - z, axis=1), np.linalg.norm(fz, axis=1)])
    outs = {}
    for name, loop in _loops(host_kernels.residual_norms).items():
        outs[name] = np.empty((2, B), dtype=z.dtype)
        loop(z, fz, outs[name])
        _close(outs[name], expected, dtype)
    for loop in _loops(host_kernels.norms).values():
        out = np.empty((2, B), dtype=z.dtype)
        loop(fz - z, fz, out)
        _close(out, expected, dtype)
    np.testing.assert_array_equal(outs["serial"], outs["threaded"])


@pytest.mark.parametrize(("s", "n"), [(0, 1), (2, 3), (1, M)])
def test_anderson_record(dtype, s, n):
    z, fz, fs0, gs0 = _arrays(dtype, (B, D), (B, D), (M, B, D), (M, B, D))
    results = {}
    for name, loop in _loops(host_kernels.anderson_record).items():
        fs, gs = fs0.copy(), gs0.copy()
        norms, dots = np.empty((2, B), dtype=z.dtype), np.empty((B, 1, n), dtype=z.dtype)
        loop(z, fz, fs, gs, s, n, norms, dots)
        g = fz - z
        np.testing.assert_array_equal(fs[s], fz)
        np.testing.assert_array_equal(gs[s], g)
        others = [i for i in range(M) if i != s]  # untouched slots
        np.testing.assert_array_equal(fs[others], fs0[others])
        np.testing.assert_array_equal(gs[others], gs0[others])
        _close(norms, np.stack([np.linalg.norm(g, axis=1), np.linalg.norm(fz, axis=1)]), dtype)
        _close(dots[:, 0], np.einsum("bd,nbd->bn", g, gs[:n]), dtype)
        results[name] = (fs, gs, norms, dots)
    for serial, threaded in zip(results["serial"], results["threaded"], strict=True):
        np.testing.assert_array_equal(serial, threaded)


@pytest.mark.parametrize("damping", [0.0, 0.4])
def test_anderson_mix(dtype, damping):
    alpha, fs, gs = _arrays(dtype, (B, 1, M), (M, B, D), (M, B, D))
    alpha[:, :, -1] = 0  # an unused slot: weight 0, and pointed at a used one (as the solver does)
    fs[-1], gs[-1] = fs[0], gs[0]
    expected = np.einsum("bm,mbd->bd", alpha[:, 0], fs - damping * gs)
    outs = {}
    for name, loop in _loops(host_kernels.anderson_mix).items():
        outs[name] = np.full((B, D), np.nan, dtype=fs.dtype)
        loop(outs[name], alpha, tuple(fs), tuple(gs), fs.dtype.type(damping))
        _close(outs[name], expected, dtype)
    np.testing.assert_array_equal(outs["serial"], outs["threaded"])


@pytest.mark.parametrize("n", [0, 1, M])
def test_broyden_record(dtype, n):
    z, z_new, fz, w0 = _arrays(dtype, (B, D), (B, D), (B, D), (2 + 2 * M, B, D))
    results = {}
    for name, loop in _loops(host_kernels.broyden_record).items():
        w = w0.copy()
        norms, prods = np.empty((2, B), dtype=z.dtype), np.empty((B, 2, 2 + 2 * n), dtype=z.dtype)
        loop(z, z_new, fz, w, n, norms, prods)
        g, dz = fz - z_new, z_new - z
        np.testing.assert_array_equal(w[0], g)
        np.testing.assert_array_equal(w[1], dz)
        np.testing.assert_array_equal(w[2:], w0[2:])  # the pairs are only read
        _close(norms, np.stack([np.linalg.norm(g, axis=1), np.linalg.norm(fz, axis=1)]), dtype)
        _close(prods, np.einsum("kbd,jbd->bkj", w[:2], w[: 2 + 2 * n]), dtype)
        results[name] = (w, norms, prods)
    for serial, threaded in zip(results["serial"], results["threaded"], strict=True):
        np.testing.assert_array_equal(serial, threaded)


@pytest.mark.parametrize("n", [0, 1, M - 1])
def test_broyden_update(dtype, n):
    z, w0, weights, factors = _arrays(dtype, (B, D), (2 + 2 * M, B, D), (B, 2, M), (2, B, 1))
    # As the secant leaves them: -1 on g (in p) and Δz (in v), pair i's weights at 2 + 2i
    # (u_i, in p) and 3 + 2i (v_i, in v), zero elsewhere. Pairs n and up hold stale weights
    # from before a restart: the kernel must not read them.
    coef = np.zeros((B, 2, 2 + 2 * M), dtype=z.dtype)
    coef[:, 0, 0] = coef[:, 1, 1] = -1
    coef[:, 0, 2::2], coef[:, 1, 3::2] = weights[:, 0], weights[:, 1]
    used = coef[:, :, : 2 + 2 * n]
    pv = np.einsum("bkr,rbd->kbd", used, w0[: 2 + 2 * n])  # as the batched product forms them
    rows = (
        tuple(2 + 2 * i if i < n else 0 for i in range(M)),
        tuple(3 + 2 * i if i < n else 1 for i in range(M)),
    )
    results = {}
    for name, loop in _loops(host_kernels.broyden_update).items():
        w, z_next = w0.copy(), np.full((B, D), np.nan, dtype=z.dtype)
        scratch = np.full((B, 2, M), np.nan, dtype=z.dtype)
        loop(z, w, coef, n, factors, z_next, w[2 + 2 * n], w[3 + 2 * n], *rows, scratch)
        _close(w[2 + 2 * n], pv[0] * factors[0], dtype)  # u = −p / vᵀΔg
        _close(w[3 + 2 * n], pv[1], dtype)  # v
        _close(z_next, z + pv[0] * factors[1], dtype)
        others = [r for r in range(2 + 2 * M) if r not in (2 + 2 * n, 3 + 2 * n)]
        np.testing.assert_array_equal(w[others], w0[others])
        results[name] = (w, z_next)
    for serial, threaded in zip(results["serial"], results["threaded"], strict=True):
        np.testing.assert_array_equal(serial, threaded)


@pytest.mark.parametrize("skipped", [False, True], ids=["update", "skipped"])
def test_broyden_restart(dtype, skipped):
    z, w0, noise = _arrays(dtype, (B, D), (2 + 2 * M, B, D), (B, D))
    g, dz = w0[0], w0[1]
    g_prev = g + 0.5 * dz + 0.1 * noise  # Δg ≈ −Δz/2, as for a mild map: vᵀΔg ≈ ‖Δz‖²/2
    if skipped:  # Δg ⟂ Δz for sample 0: vᵀΔg = 0, so its update is skipped (u = 0)
        dg = g[0] - g_prev[0]
        g_prev[0] += dz[0] * (dz[0] @ dg) / (dz[0] @ dz[0])
    dg = g - g_prev
    den = -np.einsum("bd,bd->b", dz, dg)
    u = (dz + dg) / den[:, None]
    if skipped:
        u[0] = 0
    z_next_expected = z + g + u * np.einsum("bd,bd->b", dz, g)[:, None]
    results = {}
    for name, loop in _loops(host_kernels.broyden_restart).items():
        w, z_next = w0.copy(), np.full((B, D), np.nan, dtype=z.dtype)
        loop(z, w, g_prev, 3e-2, z_next)
        _close(w[2], u, dtype)
        np.testing.assert_array_equal(w[3], -dz)
        _close(z_next, z_next_expected, dtype)
        others = [0, 1, *range(4, 2 + 2 * M)]  # g, Δz and the other pairs: only read
        np.testing.assert_array_equal(w[others], w0[others])
        results[name] = (w, z_next)
    for serial, threaded in zip(results["serial"], results["threaded"], strict=True):
        np.testing.assert_array_equal(serial, threaded)


def test_large_states_take_the_threaded_loop(monkeypatch):
    calls = []
    kernel = host_kernels.residual_norms
    monkeypatch.setattr(kernel, "threaded", lambda *a: calls.append("threaded"))
    monkeypatch.setattr(kernel, "serial", lambda *a: calls.append("serial"))
    out = np.empty((2, 4))
    for batch, dim in ((4, host_kernels.GRAIN // 4), (4, host_kernels.GRAIN // 4 - 1)):
        kernel(np.zeros((batch, dim)), np.zeros((batch, dim)), out)
    assert calls == ["threaded", "serial"]


def test_kernels_use_as_many_threads_as_torch():
    numba = pytest.importorskip("numba")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        host_kernels.use_torch_threads()
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        host_kernels.use_torch_threads()


# A fresh process, since numba's threading layer starts once per process: the first solve on a
# state big enough for the threaded loops starts it, or a bare kernel call on one
# (`numba.threading_layer()` raises if nothing started it).
_FIRST_SOLVE = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(int(sys.argv[1]))
    import numba
    from deqbench.solvers import Anderson, host_kernels

    seen = [torch.get_num_threads()]
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(256, 256, generator=gen) / 32
    z0 = torch.zeros(host_kernels.GRAIN // 256, 256)  # takes the threaded loops
    if sys.argv[2] == "solve":
        Anderson()(lambda z: torch.tanh(z @ w + 1), z0, max_iter=10, tol=1e-6)
    else:
        host_kernels.residual_norms(z0.numpy(), z0.numpy() + 1, z0.new_empty(2, 128).numpy())
    seen.append(torch.get_num_threads())
    print(json.dumps({"torch": seen, "numba": numba.get_num_threads(),
                      "most": numba.config.NUMBA_NUM_THREADS, "layer": numba.threading_layer()}))
""")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("first", ["solve", "kernel"])
def test_starting_the_threads_leaves_torchs_thread_count_alone(threads, first):
    # numba's OpenMP layer sets the libgomp it shares with torch to every core as it starts.
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_SOLVE, str(threads), first],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["torch"] == [threads, threads], seen
    assert seen["numba"] == min(threads, seen["most"]), seen  # the kernels still split


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_after_threads_ran_runs_the_kernels():
    # GNU OpenMP cannot start threads in a child forked after the parent used them: without
    # the fork hook numba ends the child (a data-loader or pool worker that solves).
    z = np.ones((4, host_kernels.GRAIN // 4))
    out = np.empty((2, 4))
    host_kernels.residual_norms(z, z, out)  # threads have run in this process
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            host_kernels.residual_norms(z, 2 * z, out)
            code = 0 if out[0, 0] == np.sqrt(z.shape[1]) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
