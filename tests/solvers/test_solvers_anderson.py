"""Anderson acceleration: never slower than fixed-point iteration on the suite's problems,
scale-free, and robust to singular least-squares systems."""

from __future__ import annotations

import pytest
import torch

from deqbench.solvers import Anderson, FixedPoint, Status
from deqbench.testing.solvers import cell_problem

TANH = [
    {"spectrum": spectrum, "spectral_norm": rho, "injection_scale": inj}
    for spectrum in ("gaussian", "symmetric", "orthogonal")
    for rho in (0.9, 0.99)
    for inj in (1.0, 0.1)
]


def ids(options: dict) -> str:
    return "-".join(str(v) for v in options.values())


@pytest.mark.parametrize("options", TANH, ids=ids)
def test_never_more_evaluations_than_fixed_point_on_tanh_cells(options):
    f, z0 = cell_problem("tanh", batch=32, dim=256, **options)
    kwargs = {"max_iter": 1000, "tol": 1e-4, "stop_mode": "rel"}
    fp, aa = FixedPoint()(f, z0, **kwargs), Anderson()(f, z0, **kwargs)
    assert aa.status is Status.CONVERGED, aa.message
    assert aa.nfe <= fp.nfe


@pytest.mark.parametrize(("weight_scale", "easy"), [(0.5, True), (1.1, False)])
def test_conv_cell_easy_and_hard(weight_scale, easy):
    f, z0 = cell_problem("conv", batch=4, weight_scale=weight_scale, channels=8, groups=2)
    kwargs = {"max_iter": 600, "tol": 1e-4, "stop_mode": "rel"}
    fp, aa = FixedPoint()(f, z0, **kwargs), Anderson()(f, z0, **kwargs)
    assert fp.status is Status.CONVERGED and aa.status is Status.CONVERGED
    assert aa.nfe <= fp.nfe
    assert (fp.nfe < 100) == easy, fp.nfe


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spectrum", ["gaussian", "symmetric"])
def test_same_steps_at_any_scale(spectrum, dtype):
    f, z0 = cell_problem(
        "tanh", batch=16, dim=64, spectrum=spectrum, spectral_norm=0.99, dtype=dtype
    )
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    counts = {}
    for scale in (1.0, 1e-3, 1e3):
        result = Anderson()(lambda z, s=scale: f(z / s) * s, z0, max_iter=500, tol=tol)
        assert result.status is Status.CONVERGED, result.message
        counts[scale] = result.nfe
    assert all(abs(n - counts[1.0]) <= 0.1 * counts[1.0] for n in counts.values()), counts


def test_window_of_one_is_fixed_point_iteration():
    f, z0 = cell_problem("tanh", batch=8, dim=32, spectrum="symmetric", dtype=torch.float64)
    for beta in (1.0, 0.5):
        a = Anderson(m=1, beta=beta)(f, z0, max_iter=300, tol=1e-10)
        b = FixedPoint(beta=beta)(f, z0, max_iter=300, tol=1e-10)
        assert a.nfe == b.nfe
        torch.testing.assert_close(a.z, b.z)


def test_damped_mixing_converges():
    f, z0 = cell_problem("tanh", batch=8, dim=64, spectrum="symmetric", spectral_norm=0.99)
    result = Anderson(beta=0.7)(f, z0, max_iter=300, tol=1e-4)
    assert result.status is Status.CONVERGED, result.message


@pytest.mark.parametrize("lam", [0.0, 1e-4])
def test_singular_history_falls_back_without_nan(lam):
    # g = c at every point: the Gram matrix has rank one (singular when λ = 0). No root exists,
    # so the solve must run out its budget, finite.
    c = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    result = Anderson(lam=lam)(lambda z: z + c, torch.zeros_like(c), max_iter=20)
    assert result.status is Status.MAX_ITER
    assert result.nfe == 20
    assert bool(torch.isfinite(result.z).all())
    assert bool(torch.isfinite(result.abs_trace).all() and torch.isfinite(result.rel_trace).all())


@pytest.mark.parametrize("f", [lambda z: z, lambda z: torch.ones_like(z)], ids=["id", "const"])
def test_degenerate_maps_converge_at_once(f):
    result = Anderson()(f, torch.zeros(2, 4), max_iter=10)
    assert result.status is Status.CONVERGED
    assert result.nfe <= 2


@pytest.mark.parametrize(("option", "value"), [("m", 0), ("beta", 0.0), ("beta", 2.0), ("lam", -1)])
def test_rejects_bad_options(option, value):
    with pytest.raises(ValueError, match=option):
        Anderson(**{option: value})


def _reference_anderson(f, x, steps, m, beta, lam):
    """Plain Anderson (type II, no restarts) in float64 on one vector: the iterates at which
    ``f`` was evaluated and their residual norms."""
    fs, gs, xs, res = [], [], [], []
    for _ in range(steps):
        fx = f(x)
        fs, gs = [*fs, fx][-m:], [*gs, fx - x][-m:]
        xs.append(x)
        res.append(float(torch.linalg.vector_norm(fx - x)))
        g = torch.stack(gs)
        h = g @ g.T
        h += lam * torch.diag(torch.diag(h))
        w = torch.linalg.solve(h, torch.ones(len(gs), dtype=x.dtype))
        w /= w.sum()
        x = w @ torch.stack(fs) - (1 - beta) * (w @ g)
    return xs, res


@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_iterates_match_a_plain_reference(beta):
    # Every step of the solver (history slots, Gram rows, weights, damped mix) against a
    # direct transcription of the method, on an affine map.
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-0.9, 0.9, 12, dtype=torch.float64)) @ q.T
    c = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    z0 = torch.zeros(3, 12, dtype=torch.float64)
    solver = Anderson(m=3, beta=beta, restart=False)
    result = solver(lambda z: z @ a.T + c, z0, max_iter=7, tol=1e-30)
    for i in range(3):
        xs, res = _reference_anderson(lambda x, i=i: a @ x + c[i], z0[i], 7, 3, beta, 1e-4)
        best = min(range(1, 7), key=res.__getitem__)  # the start is never the answer
        assert result.best_step[i] == best
        torch.testing.assert_close(result.z[i], xs[best], rtol=1e-9, atol=1e-12)
        trace = torch.tensor(res, dtype=torch.float64)
        torch.testing.assert_close(result.abs_trace[:, i], trace, rtol=1e-9, atol=1e-12)
