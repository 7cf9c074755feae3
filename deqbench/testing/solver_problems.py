"""The problems of the solver conformance kit (`deqbench.testing.solvers`) and the helpers its
checks share: maps with known fixed points, residuals recomputed, failure messages."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deqbench.deq import bind
from deqbench.plugins import get_cell, get_solver
from deqbench.solvers.base import Fn, Solver


def resolve(solver: str | Solver, **options: Any) -> Solver:
    """A solver instance: ``solver`` itself, or the registered name built with ``options``."""
    if isinstance(solver, str):
        return get_solver(solver, **options)
    if options:
        raise TypeError("options are only for a solver given by name")
    return solver


def cell_problem(
    cell: str, *, batch: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32, **options: Any
) -> tuple[Fn, Tensor]:
    """A registered cell at fixed weights as a solver problem: flat ``f`` and its start ``z0``.

    The input is ``N(0, 1)`` of the cell's ``input_shape``, drawn from ``seed``.
    """
    module = get_cell(cell, **options).to(dtype=dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *module.input_shape, generator=gen, dtype=dtype)
    with torch.no_grad():
        bound = bind(module, x)
    return bound.f, bound.z0


def name_of(solver: str | Solver) -> str:
    """How failure messages name ``solver``: its registered name, or its class."""
    return solver if isinstance(solver, str) else type(solver).__name__


def tol_for(dtype: torch.dtype) -> float:
    """The tolerance most checks solve to in ``dtype``."""
    return 1e-9 if dtype == torch.float64 else 1e-5


def affine(
    batch: int, dim: int, rho: float, dtype: torch.dtype, device: Any, seed: int, scale: float = 1
) -> tuple[Fn, Tensor, Tensor]:
    """``f(z) = A z + b`` per sample with ``‖A‖₂ = rho``; returns ``f``, ``b`` and the answer."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    a *= rho / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * scale
    eye = torch.eye(dim, dtype=torch.float64)
    answer = torch.linalg.solve(eye - a, b.T).T
    a, b, answer = (t.to(device=device, dtype=dtype) for t in (a, b, answer))
    return (lambda z: z @ a.T + b), b, answer


def tanh_map(dim: int, rho: float, dtype: torch.dtype, device: Any, seed: int) -> tuple[Fn, Tensor]:
    """``f(z) = tanh(W z + c)`` with ``‖W‖₂ = rho`` and a symmetric spread spectrum."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    w = q @ torch.diag(torch.linspace(-rho, rho, dim, dtype=torch.float64)) @ q.T
    c = torch.randn(4, dim, generator=gen, dtype=torch.float64) * 0.3
    w, c = w.to(device=device, dtype=dtype), c.to(device=device, dtype=dtype)
    return (lambda z: torch.tanh(z @ w.T + c)), c


def residuals(f: Fn, z: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) absolute and relative residuals of ``f`` at ``z``, recomputed."""
    with torch.no_grad():
        fz = f(z)
        abs_r = torch.linalg.vector_norm(fz - z, dim=1)
        return abs_r, abs_r / torch.linalg.vector_norm(fz, dim=1).clamp_min(1e-30)


def rel_error(z: Tensor, answer: Tensor) -> float:
    """‖z − answer‖ / ‖answer‖, over the whole batch."""
    return float((z - answer).norm() / answer.norm())


def fail(name: str, check: str, message: str) -> AssertionError:
    """The error a failed check raises, naming the solver and the check."""
    return AssertionError(f"solver {name!r} fails {check!r}: {message}")
