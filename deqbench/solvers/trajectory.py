"""A forward solve's trajectory, sampled at no extra cost: the points a solver calls ``f`` at, k
of them, evenly over the iteration cap (DEQ-Flow's fixed-point correction, Bai, Geng and
Kolter, CVPR 2022; the training loss is `deqbench.runs.train.correction`).

The cap N is cut into k segments of consecutive evaluations: segment j (1-based) ends at
evaluation b_j = ⌊j·N/k⌋, so b_k = N. `IterateRecorder` wraps ``f`` and keeps, per segment, a
detached copy of the point of the latest evaluation in it. A solve that runs to the cap leaves
the points of evaluations b_1, …, b_k; one that stops at evaluation n < N, in segment s, leaves
b_1, …, b_{s−1} and n. At most k states are held, one buffer per segment, whatever the solver:
the recorder never looks inside it.

Evaluation n's point is the solver's iterate there (for fixed-point iteration z_{n−1}, whose
``f`` is z_n); a solver's returned best iterate is one of these points too.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

from deqbench.solvers.base import Fn
from deqbench.state import State, StateSpec, unpack


def segment_ends(k: int, cap: int) -> tuple[int, ...]:
    """The last evaluation (1-based) of each of ``k`` equal segments of ``cap`` evaluations."""
    if not 1 <= k <= cap:
        raise ValueError(f"keep 1 to f_max_iter = {cap} iterates, got {k}")
    return tuple(j * cap // k for j in range(1, k + 1))


@dataclass(eq=False)
class Trajectory:
    """What `IterateRecorder` kept of one solve: the samples in order, the last being the
    solve's final evaluation, and the bound ``f`` (differentiable in the cell's parameters)."""

    f: Fn
    spec: StateSpec
    k: int  #: the segments asked for
    segments: tuple[int, ...]  #: each sample's segment, 1 to k
    evaluations: tuple[int, ...]  #: each sample's evaluation, 1-based
    points: tuple[Tensor, ...]  #: each sample's (B, D) point, detached

    def intermediate(self) -> list[tuple[int, Tensor]]:
        """``(s − j, point)`` for each sample but the last (the final iterate, whose term the
        equilibrium's own loss stands for), j its segment and s the last sample's."""
        last = self.segments[-1]
        return [(last - j, z) for j, z in zip(self.segments[:-1], self.points[:-1], strict=True)]

    def corrected(self) -> Iterator[tuple[int, State]]:
        """``(exponent, f(z_j))`` for each intermediate sample: one application of ``f`` to the
        detached point, differentiable in the parameters (a one-step, Jacobian-free gradient)."""
        for exponent, z in self.intermediate():
            yield exponent, unpack(self.f(z), self.spec)


class IterateRecorder:
    """``f``, recording the latest point of each of ``k`` segments of the ``cap`` evaluations."""

    def __init__(self, f: Fn, k: int, cap: int) -> None:
        self.f, self.k = f, k
        self.ends = segment_ends(k, cap)
        self.calls = 0
        self.kept: dict[int, tuple[int, Tensor]] = {}  #: segment → (evaluation, point)

    def __call__(self, z: Tensor) -> Tensor:
        self.calls += 1
        segment = min(bisect.bisect_left(self.ends, self.calls), self.k - 1) + 1
        held = self.kept.get(segment)
        # One buffer per segment, overwritten by each later point in it: no allocation per step.
        point = z.detach().clone() if held is None else held[1].copy_(z)
        self.kept[segment] = (self.calls, point)
        return self.f(z)

    def trajectory(self, spec: StateSpec) -> Trajectory | None:
        """The samples kept, in order; None when ``f`` was never called."""
        if not self.kept:
            return None
        segments = tuple(sorted(self.kept))
        return Trajectory(
            self.f,
            spec,
            self.k,
            segments,
            tuple(self.kept[j][0] for j in segments),
            tuple(self.kept[j][1] for j in segments),
        )
