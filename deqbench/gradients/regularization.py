"""Jacobian regularisation: a Hutchinson estimate of ‖∂f/∂z‖²_F at the equilibrium.

For a probe ``v`` with ``E[v vᵀ] = I`` (Gaussian or Rademacher), ``E‖vᵀJ‖² = ‖J‖²_F``, and
``vᵀJ`` is one vector-Jacobian product. The penalty follows Bai et al. (ICML 2021): the
estimate averaged over probes and samples, divided by the state size ``D``, i.e. an unbiased
estimate of ``mean_b ‖J_b‖²_F / D`` (the mean squared Jacobian entry per row), so one weight
suits models of any width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deqbench.solvers.base import Fn

PROBES = ("gaussian", "rademacher")


def _probe(like: Tensor, dist: str, generator: torch.Generator | None) -> Tensor:
    if dist == "gaussian":
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    if dist == "rademacher":
        bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1
    raise ValueError(f"probe distribution must be one of {', '.join(PROBES)}, got {dist!r}")


def hutchinson_frobenius(
    f: Fn,
    z: Tensor,
    *,
    n_samples: int = 1,
    dist: str = "gaussian",
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> Tensor:
    """(B,) unbiased estimates of ``‖∂f/∂z‖²_F`` at ``z`` (B, D), one per sample.

    ``create_graph`` keeps the estimate differentiable in ``f``'s parameters (double backward).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    z = z.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
        total = z.new_zeros(z.shape[0])
        for _ in range(n_samples):
            v = _probe(fz, dist, generator)
            (vjp,) = torch.autograd.grad(fz, z, v, create_graph=create_graph, retain_graph=True)
            total = total + vjp.pow(2).sum(dim=1)
    return total / n_samples


def jacobian_penalty(f: Fn, z: Tensor, **options) -> Tensor:
    """Scalar ``mean_b ‖J_b‖²_F / D`` estimate (options as `hutchinson_frobenius`)."""
    return hutchinson_frobenius(f, z, **options).mean() / z.shape[1]
