"""The equilibrium-cell interface: ``f(z, injection) -> z'`` on state tuples."""

from __future__ import annotations

import abc
from typing import Any

from torch import Tensor, nn

from deqbench.state import State


class Cell(nn.Module, abc.ABC):
    """A DEQ cell. The DEQ layer calls, per forward: ``reset()``, ``inject(x)`` once,
    ``init_state(injection)``, then ``forward(z, injection)`` at every solver iteration.
    """

    def reset(self) -> None:
        """Per-forward preparation: redraw dropout masks, recompute weight-normed weights."""

    @abc.abstractmethod
    def inject(self, x: Tensor) -> Any:
        """The input injection, computed once per forward and reused at every iteration."""

    @abc.abstractmethod
    def init_state(self, injection: Any) -> State:
        """The solver's starting state (a tuple of ``(B, ...)`` tensors), usually zeros."""

    @abc.abstractmethod
    def forward(self, z: State, injection: Any) -> State:
        """One application of f."""
