"""Broyden's compiled loops (`deqbench.solvers.broyden`): recording a step, the secant
update, the restart, and the update's coefficients. Called through
`deqbench.solvers.host_kernels`, which picks a row kernel's plain or threaded loop."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from deqbench.solvers.kernels_flags import SUMS, row_function


@row_function
def broyden_record_row(b, z, z_new, fz, w, n, norms, prods):
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


@row_function
def broyden_update_row(b, z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights):
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


@row_function
def broyden_restart_row(b, z, w, g_prev, skip, z_next):
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


@njit(cache=True, fastmath=SUMS)
def broyden_record_serial(z, z_new, fz, w, n, norms, prods):
    for b in range(z.shape[0]):
        broyden_record_row(b, z, z_new, fz, w, n, norms, prods)


@njit(cache=True, fastmath=SUMS, parallel=True)
def broyden_record_threaded(z, z_new, fz, w, n, norms, prods):
    for b in prange(z.shape[0]):
        broyden_record_row(b, z, z_new, fz, w, n, norms, prods)


@njit(cache=True, fastmath=SUMS)
def broyden_update_serial(z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights):
    for b in range(z.shape[0]):
        broyden_update_row(b, z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights)


@njit(cache=True, fastmath=SUMS, parallel=True)
def broyden_update_threaded(z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights):
    for b in prange(z.shape[0]):
        broyden_update_row(b, z, w, coef, n, factors, z_next, u, v, u_rows, v_rows, weights)


@njit(cache=True, fastmath=SUMS)
def broyden_restart_serial(z, w, g_prev, skip, z_next):
    for b in range(z.shape[0]):
        broyden_restart_row(b, z, w, g_prev, skip, z_next)


@njit(cache=True, fastmath=SUMS, parallel=True)
def broyden_restart_threaded(z, w, g_prev, skip, z_next):
    for b in prange(z.shape[0]):
        broyden_restart_row(b, z, w, g_prev, skip, z_next)


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
