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

This module holds what the kernels share (the views they take, the thread handling) and
dispatches them; the compiled loops live in one module per caller: `kernels_monitor`,
`kernels_anderson` and `kernels_broyden`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

from deqbench.solvers.kernels_anderson import (
    anderson_mix_row,
    anderson_mix_serial,
    anderson_mix_threaded,
    anderson_record_row,
    anderson_record_serial,
    anderson_record_threaded,
    anderson_weights,
)
from deqbench.solvers.kernels_broyden import (
    broyden_record_row,
    broyden_record_serial,
    broyden_record_threaded,
    broyden_restart_row,
    broyden_restart_serial,
    broyden_restart_threaded,
    broyden_secant,
    broyden_update_row,
    broyden_update_serial,
    broyden_update_threaded,
)
from deqbench.solvers.kernels_monitor import (
    CONVERGED,
    DIVERGED,
    RUNNING,
    copy_rows,
    norms_row,
    norms_serial,
    norms_threaded,
    observe,
    residual_norms_row,
    residual_norms_serial,
    residual_norms_threaded,
)


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


residual_norms = RowKernel(residual_norms_row, residual_norms_serial, residual_norms_threaded)
norms = RowKernel(norms_row, norms_serial, norms_threaded)
anderson_record = RowKernel(anderson_record_row, anderson_record_serial, anderson_record_threaded)
anderson_mix = RowKernel(anderson_mix_row, anderson_mix_serial, anderson_mix_threaded)
broyden_record = RowKernel(broyden_record_row, broyden_record_serial, broyden_record_threaded)
broyden_update = RowKernel(broyden_update_row, broyden_update_serial, broyden_update_threaded)
broyden_restart = RowKernel(broyden_restart_row, broyden_restart_serial, broyden_restart_threaded)

__all__ = [
    "CONVERGED",
    "DIVERGED",
    "GRAIN",
    "RUNNING",
    "RowKernel",
    "anderson_mix",
    "anderson_record",
    "anderson_weights",
    "broyden_record",
    "broyden_restart",
    "broyden_secant",
    "broyden_update",
    "copy_rows",
    "handles",
    "norms",
    "observe",
    "residual_norms",
    "use_torch_threads",
    "views",
]
