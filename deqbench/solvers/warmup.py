"""Loads the built-in solvers' compiled kernels into this process: the run workers' forkserver
imports it (`deqbench.execution.worker.PRELOAD`), so that every worker forked from it starts with
them
loaded, where reading them from numba's cache cost each solve run about a second.

Tiny solves of each host solver in float32 and float64: their states are far below
`host_kernels.GRAIN`, so only the single-threaded loops run and numba's thread pool never
starts here (a child forked from a process that started it could not start threads of its
own). A failure only costs the time it meant to save.
"""

from __future__ import annotations

import contextlib

import torch

from deqbench.solvers.anderson import Anderson
from deqbench.solvers.broyden import Broyden
from deqbench.solvers.fixed_point import FixedPoint


def warm() -> None:
    """Solve a small contraction once with each built-in host solver, in both dtypes the
    kernels take, for long enough that Broyden restarts. An elementwise map: no BLAS, no
    torch thread pool; nonlinear, so that no solver is done within a few steps."""
    for dtype in (torch.float32, torch.float64):
        b = torch.linspace(-1, 1, 32, dtype=dtype).reshape(2, 16)

        def f(z: torch.Tensor, b: torch.Tensor = b) -> torch.Tensor:
            return 0.5 * torch.tanh(z) + b

        for solver in (FixedPoint(), FixedPoint(beta=0.5), Anderson(), Broyden()):
            solver(f, torch.zeros_like(b), max_iter=12, tol=1e-30)


with contextlib.suppress(Exception):
    warm()
