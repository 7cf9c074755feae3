"""Anderson's compiled loops (`deqbench.solvers.anderson`): recording an evaluation into the
histories, mixing the slots, and the mixing weights. Called through
`deqbench.solvers.host_kernels`, which picks a row kernel's plain or threaded loop."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from deqbench.solvers.kernels_flags import SUMS, row_function


@row_function
def anderson_record_row(b, z, fz, fs, gs, s, n, norms, dots):
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


@row_function
def anderson_mix_row(b, out, alpha, fs, gs, damping):
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


@njit(cache=True, fastmath=SUMS)
def anderson_record_serial(z, fz, fs, gs, s, n, norms, dots):
    for b in range(z.shape[0]):
        anderson_record_row(b, z, fz, fs, gs, s, n, norms, dots)


@njit(cache=True, fastmath=SUMS, parallel=True)
def anderson_record_threaded(z, fz, fs, gs, s, n, norms, dots):
    for b in prange(z.shape[0]):
        anderson_record_row(b, z, fz, fs, gs, s, n, norms, dots)


@njit(cache=True, fastmath=SUMS)
def anderson_mix_serial(out, alpha, fs, gs, damping):
    for b in range(out.shape[0]):
        anderson_mix_row(b, out, alpha, fs, gs, damping)


@njit(cache=True, fastmath=SUMS, parallel=True)
def anderson_mix_threaded(out, alpha, fs, gs, damping):
    for b in prange(out.shape[0]):
        anderson_mix_row(b, out, alpha, fs, gs, damping)


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
