"""Spectral radius by Arnoldi against the dense Jacobian's eigenvalues, where power iteration
fails, and the dense Jacobian itself."""

from __future__ import annotations

import pytest
import torch

from deqbench.deq import DEQ, bind
from deqbench.measure.diagnostics import dense_jacobian, spectral_radius
from deqbench_plugins.problems import TanhCell


def _equilibrium(dim, spectrum, injection_scale=1.0):
    cell = TanhCell(dim=dim, spectrum=spectrum, spectral_norm=0.95,
                    injection_scale=injection_scale).double()  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, dim, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        z = DEQ(cell, "anderson", f_max_iter=300, f_tol=1e-12).eval()(x)[0]
    f = bind(cell, x).f
    return f, z, torch.linalg.eigvals(dense_jacobian(f, z)).abs().amax(1)


def _power_iteration(f, z, steps=200):
    jac = dense_jacobian(f, z)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=z.dtype)
    for _ in range(steps):
        w = torch.einsum("bij,bj->bi", jac, v)
        estimate = (w * v).sum(1) / (v * v).sum(1)  # Rayleigh quotient
        v = w / w.norm(dim=1, keepdim=True)
    return estimate.abs()


@pytest.mark.parametrize(
    ("spectrum", "injection_scale"),
    [("orthogonal", 1.0), ("orthogonal", 0.1), ("symmetric", 1.0), ("gaussian", 1.0)],
)
def test_arnoldi_matches_the_dense_spectral_radius(spectrum, injection_scale):
    f, z, true = _equilibrium(256, spectrum, injection_scale)
    est = spectral_radius(f, z, k=50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, true, rtol=0.03, atol=0)


def test_power_iteration_fails_where_arnoldi_does_not():
    # near-orthogonal J: every eigenvalue sits near |λ| = 0.93, in complex pairs
    f, z, true = _equilibrium(64, "orthogonal", injection_scale=0.1)
    assert true.min() > 0.9
    assert (_power_iteration(f, z) < 0.8 * true).all()  # off by 20 % to 75 %
    est = spectral_radius(f, z, k=50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, true, rtol=0.02, atol=0)


def test_arnoldi_is_exact_with_a_full_krylov_space():
    f, z, true = _equilibrium(32, "orthogonal", injection_scale=0.1)
    est = spectral_radius(f, z, k=40)  # capped at D = 32
    torch.testing.assert_close(est, true, rtol=1e-8, atol=0)


def test_dense_jacobian_matches_autograd_functional():
    f, z, _ = _equilibrium(8, "gaussian")
    jac = dense_jacobian(f, z)
    for b in range(z.shape[0]):
        full = torch.autograd.functional.jacobian(
            lambda zb, b=b: f(zb[None].expand(3, -1))[b], z[b]
        )
        torch.testing.assert_close(jac[b], full, rtol=1e-12, atol=1e-14)


def test_k_must_be_positive():
    f, z, _ = _equilibrium(8, "gaussian")
    with pytest.raises(ValueError, match="k must"):
        spectral_radius(f, z, k=0)


_NAN_SCRIPT = """
import torch
from deqbench.measure.diagnostics import spectral_radius

w = torch.eye(4, dtype=torch.float64) * 0.5
def f(z):  # sample 1's map is NaN: its Jacobian products are NaN
    out = z @ w.T
    return torch.cat([out[:1], out[1:] * float("nan")])
z = torch.ones(2, 4, dtype=torch.float64)
rho = spectral_radius(f, z, k=4)
print(rho[0].item(), torch.isnan(rho[1]).item())
nan = spectral_radius(lambda z: z * float("nan"), torch.ones(3, 5))  # issue 15's segfault
print(torch.isnan(nan).all().item())
"""


def test_non_finite_jacobians_read_nan_and_never_reach_lapack():
    # in a child process: MKL's eigvals segfaults on a NaN matrix, which would kill pytest
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _NAN_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    first, second = done.stdout.split("\n")[:2]
    rho, nan = first.split()
    assert float(rho) == pytest.approx(0.5, abs=1e-12) and nan == "True"  # finite sample: ρ = 0.5
    assert second == "True"
