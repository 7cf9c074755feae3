"""Compiled CPU kernels for the per-sample bookkeeping on the solvers' hot path.

On small problems (a batch of 64 states of 256 numbers, say) one evaluation of ``f`` costs
about as much as twenty tensor ops, so a monitor or an Anderson mixer written as a few dozen
array ops per step costs several evaluations of ``f``. These kernels do that work in one
compiled loop over the batch each (numba), on NumPy views of the solvers' own tensors: one
call per step instead of dozens. On a GPU the same logic runs as device ops instead (see
`deqbench.solvers.monitor` and the solvers); the tests check the two against each other.

Compiled on first use and cached on disk (``cache=True``). Kernels that pass over the state
split its rows over as many threads as torch uses (`RowKernel`), through numba's threading
layer: on Linux its OpenMP layer, whose calls bind to the libgomp torch loaded, so the kernels
run on the very threads torch's ops use (a step's torch ops and its kernels take turns).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch
from numba import njit, prange

from deqbench.solvers.result import _EPS as EPS

CONVERGED, RUNNING, DIVERGED = 0, 1, 2  # sample status codes (`Status.from_code`)


def views(*tensors: torch.Tensor) -> list[np.ndarray]:
    """NumPy views of CPU tensors of one shape and dtype (no copy). The kernels do not check
    bounds, so a map that returns the wrong shape must fail here (and one of another dtype
    too: the kernels would quietly compile for it and mix precisions). Strides are fine: the
    kernels index through them."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape != first.shape or t.dtype != first.dtype:
            raise ValueError(
                f"f(z) must have the shape and dtype of z, {tuple(first.shape)} {first.dtype}; "
                f"got {tuple(t.shape)} {t.dtype}"
            )
    return [t.detach().numpy() if t.requires_grad else t.numpy() for t in tensors]


def handles(dtype: torch.dtype) -> bool:
    """Whether the kernels take states of ``dtype`` (others run the device path's ops)."""
    return dtype in (torch.float32, torch.float64)


# Reassociation (SIMD partial sums) and fused multiply-adds, but IEEE semantics for inf and NaN:
# a diverging sample must show as one.
_SUMS = {"reassoc", "contract"}
# Row functions are inlined into their loops (a call per row cost 20 % on small states); the
# loops carry the same flags, since an inlined body takes its caller's.
_row = njit(cache=True, fastmath=_SUMS, inline="always")

# States of at least this many numbers have their rows split over threads: torch's own grain
# size for elementwise ops, below which its ops run on one thread too. On the project's 2-core
# machine two threads take Anderson's record from 30 to 20 µs at 32 × 1024, and from 1.0 to
# 0.53 ms at 32 × 16384 (the conv problems: where f is also on two threads, the kernels were
# the only single-threaded part of a step).
GRAIN = 32768


_threads = True  # False in a forked child: see `_serial_after_fork`


def _serial_after_fork() -> None:
    """GNU OpenMP cannot start threads in a child forked from a process that used them (numba
    ends such a child), so a forked child, a data-loader worker or a pool worker, say, runs
    every kernel on one thread."""
    global _threads
    _threads = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_serial_after_fork)


_started = False  # whether numba's threading layer has started in this process


def use_torch_threads() -> None:
    """Run the threaded kernels on as many threads as torch's ops use (once per solve), and
    start numba's threading layer, once per process, without changing torch's thread count.

    numba's OpenMP layer calls ``omp_set_num_threads(NUMBA_NUM_THREADS)`` as it starts, and
    its OpenMP calls bind to the libgomp torch loaded globally (torch's own copy: numba's
    layer and torch's ops share one thread pool and its settings). So starting the layer set
    the count torch's ops use to every core (1 → 2 on a 2-core machine) under a caller who had
    chosen one. ``numba.set_num_threads`` starts the layer first thing, so it runs here, and
    the caller's count is put back (in this thread, whose count the start set).
    """
    global _started
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    if not _started:
        _started = True
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class RowKernel:
    """A kernel over the rows of a batch, compiled twice: a plain loop, and a loop split over
    threads where the state (the first argument, (B, D)) has `GRAIN` numbers or
    more. Each loop calls a compiled row function: numba caches neither a loop that takes the
    row as an argument nor a second compilation of one function with other flags, so each
    kernel spells out its two loops."""

    def __init__(self, row: Callable[..., None], serial: Callable, threaded: Callable) -> None:
        self.serial, self.threaded = serial, threaded
        self.__doc__ = row.__doc__

    def __call__(self, *args: Any) -> None:
        first = args[0]  # (B, D)
        big = first.shape[0] * first.shape[1] >= GRAIN
        if big and _threads:
            if not _started:  # a call outside a solve: start the layer as a solve does
                use_torch_threads()
            self.threaded(*args)
        else:
            self.serial(*args)


@_row
def _residual_norms(b, z, fz, norms):
    """``norms`` (2, B): ‖fz − z‖ and ‖fz‖ per row, in one pass over ``z`` and ``fz`` without
    forming ``fz − z``."""
    zb, fb = z[b], fz[b]
    r = f = zb.dtype.type(0)  # SIMD partial sums: within 1e-7 of float64 at D = 16384
    for j in range(zb.shape[0]):
        d = fb[j] - zb[j]
        r += d * d
        f += fb[j] * fb[j]
    norms[0, b] = np.sqrt(r)
    norms[1, b] = np.sqrt(f)


@_row
def _norms(b, g, fz, out):
    """``out`` (2, B): ‖g‖ and ‖fz‖ per row, in one pass."""
    gb, fb = g[b], fz[b]
    r = f = gb.dtype.type(0)
    for j in range(gb.shape[0]):
        r += gb[j] * gb[j]
        f += fb[j] * fb[j]
    out[0, b] = np.sqrt(r)
    out[1, b] = np.sqrt(f)


@_row
def _anderson_record(b, z, fz, fs, gs, s, n, norms, dots):
    """Store the evaluation ``fz = f(z)`` in slot ``s`` of the histories ``fs`` and ``gs``
    (m, B, D) as ``fz`` and ``g = fz − z``, with ``norms`` (2, B): ‖g‖ and ‖fz‖, and ``dots``
    (B, 1, n): ``g · g_i`` for the first ``n`` slots. Row by row, so the second pass over a
    row of ``g`` reads it from cache: one pass over the state where the same in array ops
    takes seven, plus one per slot.
    """
    zb, fb, f_s, g_s = z[b], fz[b], fs[s, b], gs[s, b]
    r = f = zb.dtype.type(0)
    for j in range(zb.shape[0]):
        fv = fb[j]
        gv = fv - zb[j]
        f_s[j] = fv
        g_s[j] = gv
        r += gv * gv
        f += fv * fv
    norms[0, b] = np.sqrt(r)
    norms[1, b] = np.sqrt(f)
    for i in range(n):
        if i == s:
            dots[b, 0, i] = r
            continue
        g_i = gs[i, b]
        acc = zb.dtype.type(0)
        for j in range(zb.shape[0]):
            acc += g_s[j] * g_i[j]
        dots[b, 0, i] = acc


@_row
def _anderson_mix(b, out, alpha, fs, gs, damping):
    """``out[b] = Σ_i α_i (fs_i[b] − damping · gs_i[b])`` over all ``m`` slots, where ``fs``
    and ``gs`` are tuples of ``m`` arrays (B, D) and ``alpha`` (B, 1, m) weighs unused slots 0.
    The slot count is a compile-time constant (a tuple's length), so the loop over slots
    unrolls inside the vectorised loop over the row: one pass that writes the output once.
    """
    o, a = out[b], alpha[b, 0]
    if damping == 0:  # a loop of its own, so that undamped steps never read the residuals
        for j in range(o.shape[0]):
            acc = o.dtype.type(0)
            for i in range(len(fs)):
                acc += a[i] * fs[i][b, j]
            o[j] = acc
    else:
        for j in range(o.shape[0]):
            acc = o.dtype.type(0)
            for i in range(len(fs)):
                acc += a[i] * (fs[i][b, j] - damping * gs[i][b, j])
            o[j] = acc


@_row
def _broyden_record(b, z, z_new, fz, w, n, norms, prods):
    """For Broyden's step from ``z`` to ``z_new`` with ``fz = f(z_new)``: rows 0 and 1 of the
    buffer ``w`` (2 + 2m, B, D) become ``g = fz − z_new`` and ``dz = z_new − z``, ``norms``
    (2, B) ‖g‖ and ‖fz‖, and ``prods`` (B, 2, 2 + 2n) the dot products of ``g`` and ``dz``
    with the rows ``g, dz, u_0, v_0, …`` of ``n`` pairs. One pass over the state, then one
    over the pairs, with ``g`` and ``dz`` read from cache.
    """
    zb, nb, fb, gb, db = z[b], z_new[b], fz[b], w[0, b], w[1, b]
    zero = zb.dtype.type(0)
    gg = gd = dd = f = zero
    for j in range(zb.shape[0]):
        fv, nv = fb[j], nb[j]
        gv = fv - nv
        dv = nv - zb[j]
        gb[j] = gv
        db[j] = dv
        gg += gv * gv
        gd += gv * dv
        dd += dv * dv
        f += fv * fv
    norms[0, b] = np.sqrt(gg)
    norms[1, b] = np.sqrt(f)
    prods[b, 0, 0], prods[b, 0, 1], prods[b, 1, 0], prods[b, 1, 1] = gg, gd, gd, dd
    for i in range(2, 2 + 2 * n):
        row = w[i, b]
        pg = pd = zero
        for j in range(row.shape[0]):
            pg += gb[j] * row[j]
            pd += db[j] * row[j]
        prods[b, 0, i] = pg
        prods[b, 1, i] = pd


@_row
def _broyden_update(b, z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights):
    """Broyden's update of row ``b`` after the secant: from ``coef`` (B, 2, 2 + 2m), the
    weights of the rows of ``w`` (2 + 2m, B, D) in ``p = H g_new = −g_new + Σ c_i u_i`` and
    ``v = Hᵀ Δz = −Δz + Σ c'_i v_i``, and ``factors`` (2, B, 1) ``(−1/vᵀΔg, −‖Δz‖²/vᵀΔg)``:
    writes pair ``n`` (``u = −p/vᵀΔg`` into ``u``, row ``2 + 2n``, and ``v`` into ``v``, row
    ``3 + 2n``) and the next iterate ``z_next = z + p·(−‖Δz‖²/vᵀΔg)``, in one pass that reads
    each pair once: ``p`` and ``v`` never exist as buffers of their own.

    ``u_rows`` and ``v_rows``: the rows of the ``n`` pairs, padded to ``m`` with rows 0 and 1
    (at weight 0; ``weights`` (B, 2, m) is scratch for the pairs' weights). Their length is a
    compile-time constant, so the loop over pairs unrolls inside the vectorised loop over the
    state. The rows are (B, D) blocks and ``u`` and ``v`` come as arguments of their own:
    reading and writing rows of one (B, rows, D) array keeps the loop from vectorising (3×
    slower).
    """
    m = len(u_rows)
    c_u, c_v = weights[b, 0], weights[b, 1]
    for i in range(m):  # pair i: u_i weighs into p, v_i into v
        c_u[i] = coef[b, 0, 2 + 2 * i] if i < n else 0
        c_v[i] = coef[b, 1, 3 + 2 * i] if i < n else 0
    c_g, c_dz = coef[b, 0, 0], coef[b, 1, 1]
    inv, step = factors[0, b, 0], factors[1, b, 0]
    zb, out, ub, vb = z[b], z_next[b], u[b], v[b]
    for j in range(zb.shape[0]):
        pj = c_g * w[0, b, j]
        vj = c_dz * w[1, b, j]
        for i in range(m):
            pj += c_u[i] * w[u_rows[i], b, j]
            vj += c_v[i] * w[v_rows[i], b, j]
        ub[j] = pj * inv
        vb[j] = vj
        out[j] = zb[j] + pj * step


@_row
def _broyden_restart(b, z, w, g_prev, skip, z_next):
    """Broyden's restart of row ``b``: ``H = −I`` updated with the secant ``(Δz, Δg)``, where
    rows 0 and 1 of ``w`` (2 + 2m, B, D) hold ``g`` and ``Δz`` and ``Δg = g − g_prev``.
    Writes the pair into rows 2 and 3 (``u = (Δz + Δg)/vᵀΔg``, ``v = −Δz``, with
    ``vᵀΔg = −Δz·Δg``; ``u = 0`` where the update is skipped, as in `broyden_secant`) and the
    next iterate ``z_next = z + g − u (v·g)``: one pass for the dot products, one for the
    writes, with ``Δg`` and the step never stored.
    """
    gb, db, pb, zb = w[0, b], w[1, b], g_prev[b], z[b]
    u, v, out = w[2, b], w[3, b], z_next[b]
    zero = zb.dtype.type(0)
    dzdg = dz2 = dzg = zero
    for j in range(zb.shape[0]):
        dj = db[j]
        dzdg += dj * (gb[j] - pb[j])
        dz2 += dj * dj
        dzg += dj * gb[j]
    den = -dzdg
    inv = zb.dtype.type(1) / den if abs(den) > skip * dz2 and abs(den) < np.inf else zero
    for j in range(zb.shape[0]):
        dj = db[j]
        uj = (dj + (gb[j] - pb[j])) * inv
        u[j] = uj
        v[j] = -dj
        out[j] = zb[j] + (gb[j] + uj * dzg)


@njit(cache=True, fastmath=_SUMS)
def _residual_norms_serial(z, fz, norms):
    for b in range(z.shape[0]):
        _residual_norms(b, z, fz, norms)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _residual_norms_threaded(z, fz, norms):
    for b in prange(z.shape[0]):
        _residual_norms(b, z, fz, norms)


@njit(cache=True, fastmath=_SUMS)
def _norms_serial(g, fz, out):
    for b in range(g.shape[0]):
        _norms(b, g, fz, out)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _norms_threaded(g, fz, out):
    for b in prange(g.shape[0]):
        _norms(b, g, fz, out)


@njit(cache=True, fastmath=_SUMS)
def _anderson_record_serial(z, fz, fs, gs, s, n, norms, dots):
    for b in range(z.shape[0]):
        _anderson_record(b, z, fz, fs, gs, s, n, norms, dots)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _anderson_record_threaded(z, fz, fs, gs, s, n, norms, dots):
    for b in prange(z.shape[0]):
        _anderson_record(b, z, fz, fs, gs, s, n, norms, dots)


@njit(cache=True, fastmath=_SUMS)
def _anderson_mix_serial(out, alpha, fs, gs, damping):
    for b in range(out.shape[0]):
        _anderson_mix(b, out, alpha, fs, gs, damping)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _anderson_mix_threaded(out, alpha, fs, gs, damping):
    for b in prange(out.shape[0]):
        _anderson_mix(b, out, alpha, fs, gs, damping)


@njit(cache=True, fastmath=_SUMS)
def _broyden_record_serial(z, z_new, fz, w, n, norms, prods):
    for b in range(z.shape[0]):
        _broyden_record(b, z, z_new, fz, w, n, norms, prods)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _broyden_record_threaded(z, z_new, fz, w, n, norms, prods):
    for b in prange(z.shape[0]):
        _broyden_record(b, z, z_new, fz, w, n, norms, prods)


@njit(cache=True, fastmath=_SUMS)
def _broyden_update_serial(z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights):
    for b in range(z.shape[0]):
        _broyden_update(b, z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _broyden_update_threaded(z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights):
    for b in prange(z.shape[0]):
        _broyden_update(b, z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights)


@njit(cache=True, fastmath=_SUMS)
def _broyden_restart_serial(z, w, g_prev, skip, z_next):
    for b in range(z.shape[0]):
        _broyden_restart(b, z, w, g_prev, skip, z_next)


@njit(cache=True, fastmath=_SUMS, parallel=True)
def _broyden_restart_threaded(z, w, g_prev, skip, z_next):
    for b in prange(z.shape[0]):
        _broyden_restart(b, z, w, g_prev, skip, z_next)


residual_norms = RowKernel(_residual_norms, _residual_norms_serial, _residual_norms_threaded)
norms = RowKernel(_norms, _norms_serial, _norms_threaded)
anderson_record = RowKernel(_anderson_record, _anderson_record_serial, _anderson_record_threaded)
anderson_mix = RowKernel(_anderson_mix, _anderson_mix_serial, _anderson_mix_threaded)
broyden_record = RowKernel(_broyden_record, _broyden_record_serial, _broyden_record_threaded)
broyden_update = RowKernel(_broyden_update, _broyden_update_serial, _broyden_update_threaded)
broyden_restart = RowKernel(_broyden_restart, _broyden_restart_serial, _broyden_restart_threaded)


@njit(cache=True)
def observe(
    k,
    norms,
    traces,
    active,
    best_r,
    best_step,
    bound,
    status,
    nstep,
    better,
    tol,
    divergence,
    relative,
):
    """Record evaluation ``k`` of every sample; returns ``(improved, still active, stopped now)``.

    ``norms`` (2, B): ‖f(z) − z‖ and ‖f(z)‖ of this evaluation. Writes trace row ``k`` (a
    stopped sample repeats its last residual), the best residual and step of samples that
    improved (flagged in ``better``; at step 0 none: the start is never the answer once a step
    exists), the divergence bound, and the status and step count of active samples.

    Bounds are not checked: the caller guarantees ``0 <= k < traces.shape[1]`` and that every
    array has the batch's length. A negative norm of an active sample (the monitor's "never
    written" mark) returns ``(-1, 0, 0)`` with nothing written; NaN passes (a diverged sample).
    """
    for i in range(norms.shape[1]):
        if active[i] and (norms[0, i] < 0 or norms[1, i] < 0):
            return -1, 0, 0
    improved = running = stopped = 0
    for i in range(norms.shape[1]):
        if not active[i]:
            better[i] = False
            if k:
                traces[0, k, i] = traces[0, k - 1, i]
                traces[1, k, i] = traces[1, k - 1, i]
            continue
        a = traces[0, k, i] = norms[0, i]
        traces[1, k, i] = a / max(norms[1, i], EPS)
        r = traces[1, k, i] if relative else a  # as stored: rounded to the traces' dtype
        better[i] = k > 0 and (k == 1 or r < best_r[i])
        if better[i]:
            best_r[i] = r
            best_step[i] = k
            improved += 1
        # Diverged: non-finite, or `divergence` times above the lowest residual so far.
        bounded = a <= bound[i]  # false for NaN
        scaled = a * divergence
        if scaled < bound[i]:  # NaN (0·inf) leaves the bound as it is
            bound[i] = scaled
        nstep[i] = k
        if r <= tol:
            status[i] = CONVERGED
        elif not bounded:
            status[i] = DIVERGED
        else:
            running += 1
            continue
        active[i] = False
        stopped += 1
    return improved, running, stopped


@njit(cache=True)
def copy_rows(rows, skip, src, dst):
    """``dst[i] = src[i]`` for every ``i`` with ``rows[i]`` and not ``skip[i]``."""
    for i in range(src.shape[0]):
        if rows[i] and not skip[i]:
            dst[i] = src[i]


@njit(cache=True)
def anderson_weights(dots, gram, valid, alpha, ridge, k, s, n, restart):
    """Anderson's mixing weights ``alpha`` (B, 1, n) after evaluation ``k`` (in slot ``s``).

    ``dots`` (B, 1, n): ``g_s · g_i``. Updates row and column ``s`` of each sample's system
    ``gram`` (B, m, m): the Gram matrix of the slots in ``valid`` (B, m, 1) with ``(1 + ridge)``
    on the diagonal and the identity's rows elsewhere, and solves it against ``valid`` (LU with
    partial pivoting, in float64). With ``restart``, a sample whose residual grew forgets its
    history. A sample whose system is singular, or whose weights do not sum to a positive
    finite number, takes a plain step (weight 1 on slot ``s``).
    """
    m = gram.shape[1]
    lu = np.empty((n, n))
    x = np.empty(n)
    prev = (k - 1) % m
    for b in range(gram.shape[0]):
        diag = dots[b, 0, s] * (1 + ridge)
        if restart and k and diag > gram[b, prev, prev]:
            for i in range(m):
                valid[b, i, 0] = 0
                for j in range(m):
                    gram[b, i, j] = 1.0 if i == j else 0.0
        valid[b, s, 0] = 1
        for j in range(n):
            v = (diag if j == s else dots[b, 0, j]) * valid[b, j, 0]
            gram[b, s, j] = v
            gram[b, j, s] = v
        for i in range(n):
            x[i] = valid[b, i, 0]
            for j in range(n):
                lu[i, j] = gram[b, i, j]
        ok = _lu_solve(lu, x)
        total = 0.0
        for i in range(n):
            total += x[i]
        ok = ok and total > 0 and total < np.inf
        for i in range(n):
            alpha[b, 0, i] = x[i] / total if ok else (1.0 if i == s else 0.0)


@njit(cache=True)
def _lu_solve(a, x):
    """Solve ``a y = x`` in place (``x`` becomes ``y``); False if ``a`` is singular."""
    n = a.shape[0]
    for c in range(n):
        p = c
        for r in range(c + 1, n):
            if abs(a[r, c]) > abs(a[p, c]):
                p = r
        if not abs(a[p, c]) > 0:  # zero or NaN pivot
            return False
        if p != c:
            for j in range(n):
                a[c, j], a[p, j] = a[p, j], a[c, j]
            x[c], x[p] = x[p], x[c]
        for r in range(c + 1, n):
            f = a[r, c] / a[c, c]
            for j in range(c, n):
                a[r, j] -= f * a[c, j]
            x[r] -= f * x[c]
    for c in range(n - 1, -1, -1):
        acc = x[c]
        for j in range(c + 1, n):
            acc -= a[c, j] * x[j]
        x[c] = acc / a[c, c]
    return True


@njit(cache=True)
def broyden_secant(prods, coef, n, skip, vg, factors):
    """Broyden's update from the dot products ``prods`` (B, 2, 2 + 2n) of ``g_new`` and ``Δz``
    with the rows ``g_new, Δz, u_0, v_0, …``: the pairs' weights in ``p = H g_new`` and
    ``v = Hᵀ Δz`` (into ``coef``), ``vg = v·g_new = −Δz·g_new + Σ (u_i·Δz)(v_i·g_new)``, and
    ``factors`` (2, B, 1): ``−1/vᵀΔg`` and ``−‖Δz‖²/vᵀΔg`` of a full step, with
    ``vᵀΔg = v·g_new + ‖Δz‖²``; ``(0, −1)`` where the update is skipped (``|vᵀΔg|`` at most
    ``skip``·‖Δz‖², or not finite).
    """
    for b in range(prods.shape[0]):
        acc = -prods[b, 1, 0]
        for i in range(n):
            v_g = prods[b, 0, 3 + 2 * i]  # v_i · g_new weighs u_i in p
            u_dz = prods[b, 1, 2 + 2 * i]  # u_i · Δz weighs v_i in v
            coef[b, 0, 2 + 2 * i] = v_g
            coef[b, 1, 3 + 2 * i] = u_dz
            acc += v_g * u_dz
        vg[b] = acc
        dz2 = prods[b, 1, 1]
        den = vg[b] + dz2
        if abs(den) > skip * dz2 and abs(den) < np.inf:
            factors[0, b, 0] = -1.0 / den
            factors[1, b, 0] = -dz2 / den
        else:
            factors[0, b, 0] = 0.0
            factors[1, b, 0] = -1.0
