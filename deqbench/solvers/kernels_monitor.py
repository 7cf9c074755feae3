"""The monitor's compiled loops (`deqbench.solvers.monitor`): the residual norms of an
evaluation, and the per-sample record of it. Called through `deqbench.solvers.host_kernels`,
which picks a row kernel's plain or threaded loop."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from deqbench.solvers.kernels_flags import SUMS, row_function
from deqbench.solvers.result import _EPS as EPS

CONVERGED, RUNNING, DIVERGED = 0, 1, 2  # sample status codes (`Status.from_code`)


@row_function
def residual_norms_row(b, z, fz, norms):
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


@row_function
def norms_row(b, g, fz, out):
    """``out`` (2, B): ‖g‖ and ‖fz‖ per row, in one pass."""
    gb, fb = g[b], fz[b]
    r = f = gb.dtype.type(0)
    for j in range(gb.shape[0]):
        r += gb[j] * gb[j]
        f += fb[j] * fb[j]
    out[0, b] = np.sqrt(r)
    out[1, b] = np.sqrt(f)


@njit(cache=True, fastmath=SUMS)
def residual_norms_serial(z, fz, norms):
    for b in range(z.shape[0]):
        residual_norms_row(b, z, fz, norms)


@njit(cache=True, fastmath=SUMS, parallel=True)
def residual_norms_threaded(z, fz, norms):
    for b in prange(z.shape[0]):
        residual_norms_row(b, z, fz, norms)


@njit(cache=True, fastmath=SUMS)
def norms_serial(g, fz, out):
    for b in range(g.shape[0]):
        norms_row(b, g, fz, out)


@njit(cache=True, fastmath=SUMS, parallel=True)
def norms_threaded(g, fz, out):
    for b in prange(g.shape[0]):
        norms_row(b, g, fz, out)


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
