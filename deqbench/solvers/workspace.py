"""Scratch buffers a solver keeps from one solve to the next, on the CPU.

A solver's history buffers are large (Broyden's at ``m = 8`` holds 18 states), and on the CPU
a fresh one costs more than its size suggests: glibc maps a block that large anew on every
call, and each of its pages faults in, zeroed, on first write. On the 2 MB conv state that was
9,200 page faults per Broyden solve, about a tenth of the time of a solve of 21 evaluations.
A solver therefore asks its `Monitor` for its buffers (`Monitor.buffer`), and the monitor takes
them from the solver's `Workspace`: the last solve's memory where name, shape and dtype match.

Only buffers that never leave the solve belong here (histories, directions, scratch), never an
iterate that could come back as the result: the next solve would overwrite it. On CUDA the
caching allocator already reuses blocks without faults, so there every buffer is fresh and
nothing is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_Key = tuple[str, tuple[int, ...], torch.dtype]


class Scratch:
    """The buffers of one solve: kept ones where they match, fresh ones otherwise."""

    def __init__(self, like: Tensor, kept: dict[_Key, Tensor]) -> None:
        self._like, self._kept = like, kept
        self.used: dict[_Key, Tensor] = {}

    def empty(self, name: str, *shape: int) -> Tensor:
        """A buffer of ``shape`` on ``like``'s device and dtype, contents undefined. ``name``
        tells a solve's buffers apart (two of one shape are two names)."""
        key = (name, shape, self._like.dtype)
        if key in self.used:
            raise ValueError(f"buffer {name!r} of shape {shape} was already taken in this solve")
        buf = self._kept.get(key)
        if buf is None:
            buf = self._like.new_empty(shape)
        self.used[key] = buf
        return buf


class Workspace:
    """The buffers of a solver's last solve on the CPU, for its next one.

    A solve that finds the workspace in use (another thread's, or a solve nested inside this
    solver's own ``f``) gets fresh buffers instead. Only what the last solve used is kept;
    `clear` lets it go. Copies and pickles of a solver start with an empty workspace.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[_Key, Tensor] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held between solves."""
        return sum(t.untyped_storage().nbytes() for t in self._kept.values())

    def clear(self) -> None:
        """Let the kept buffers go: the next solve allocates afresh. (Called during a solve, as
        from its ``f``, it does not stop that solve keeping its own buffers when it ends.)"""
        self._kept = {}  # no lock: a solve nested in f may call this while its caller holds it

    @contextmanager
    def lease(self, like: Tensor) -> Iterator[Scratch]:
        """The buffers for one solve from ``like`` ((B, D)); what it used is kept after."""
        if like.device.type != "cpu" or not self._lock.acquire(blocking=False):
            yield Scratch(like, {})
            return
        scratch = Scratch(like, self._kept)
        try:
            yield scratch
        finally:
            self._kept = scratch.used
            self._lock.release()

    def __reduce__(self) -> tuple[type[Workspace], tuple[()]]:
        return (type(self), ())
