"""Packing a DEQ state (a tuple of tensors, one per resolution) into a flat ``(B, D)`` tensor.

Solvers only ever see the flat view; cells only ever see tuples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class StateSpec:
    """The per-sample shapes of a state's tensors, enough to unpack a flat view."""

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, state: Sequence[Tensor]) -> StateSpec:
        return cls(tuple(tuple(t.shape[1:]) for t in state))

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.sizes)


def pack(state: Sequence[Tensor]) -> Tensor:
    """Flatten a tuple of ``(B, ...)`` tensors into one ``(B, D)`` tensor (a view when single)."""
    if len(state) == 1:
        return state[0].reshape(state[0].shape[0], -1)
    return torch.cat([t.reshape(t.shape[0], -1) for t in state], dim=1)


def unpack(flat: Tensor, spec: StateSpec) -> State:
    """Split a ``(B, D)`` tensor back into the tuple described by ``spec`` (views, no copies)."""
    batch = flat.shape[0]
    parts = flat.split(spec.sizes, dim=1)
    return tuple(p.reshape(batch, *shape) for p, shape in zip(parts, spec.shapes, strict=True))
