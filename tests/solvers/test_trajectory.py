"""Sampling a solve's trajectory (`deqbench.solvers.trajectory`): which evaluations are kept,
for a solve that runs to its cap and one that stops early, and that the DEQ layer records
nothing unless asked, in training forwards only."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from deqbench.cell import Cell
from deqbench.deq import DEQ
from deqbench.plugins import get_solver
from deqbench.solvers.trajectory import IterateRecorder, segment_ends
from deqbench.state import StateSpec

DT = torch.float64


def halving(z: Tensor) -> Tensor:
    """z ↦ z/2 + 1 from 0: z_n = 2(1 − 2⁻ⁿ); evaluation n (at z_{n−1}) has residual 2^(1−n)."""
    return 0.5 * z + 1


def iterate(n: int) -> Tensor:
    return torch.full((2, 1), 2 * (1 - 0.5**n), dtype=DT)


def test_segment_ends_split_the_cap_evenly():
    assert segment_ends(3, 9) == (3, 6, 9)
    assert segment_ends(3, 10) == (3, 6, 10)
    assert segment_ends(4, 30) == (7, 15, 22, 30)
    assert segment_ends(1, 5) == (5,)
    assert segment_ends(5, 5) == (1, 2, 3, 4, 5)
    for k in (0, 6):
        with pytest.raises(ValueError, match="keep 1 to f_max_iter = 5 iterates"):
            segment_ends(k, 5)


def solve(max_iter: int, tol: float, k: int):
    recorder = IterateRecorder(halving, k, max_iter)
    result = get_solver("fixed-point")(
        recorder, torch.zeros(2, 1, dtype=DT), max_iter=max_iter, tol=tol, stop_mode="abs"
    )
    return recorder, result, recorder.trajectory(StateSpec(((1,),)))


def test_a_solve_to_the_cap_keeps_the_last_evaluation_of_each_segment():
    recorder, result, traj = solve(max_iter=9, tol=1e-30, k=3)
    assert recorder.calls == result.nfe == 9
    assert traj.segments == (1, 2, 3) and traj.evaluations == (3, 6, 9)
    for point, n in zip(traj.points, traj.evaluations, strict=True):  # evaluation n is at z_{n−1}
        torch.testing.assert_close(point, iterate(n - 1), rtol=0, atol=1e-15)
        assert not point.requires_grad
    # the final sample is the solve's returned (best) iterate; the others come before it
    torch.testing.assert_close(traj.points[-1], result.z, rtol=0, atol=0)
    assert [e for e, _ in traj.intermediate()] == [2, 1]


def test_a_solve_that_stops_early_keeps_its_final_evaluation_last():
    # residual 2^(1−n) < 0.07 first at n = 5: segments 1 (evaluations 1–3) and 2 (4–6, cut at 5)
    recorder, result, traj = solve(max_iter=9, tol=0.07, k=3)
    assert result.nfe == recorder.calls == 5
    assert traj.segments == (1, 2) and traj.evaluations == (3, 5)
    torch.testing.assert_close(traj.points[0], iterate(2), rtol=0, atol=1e-15)
    torch.testing.assert_close(traj.points[1], iterate(4), rtol=0, atol=1e-15)
    # one intermediate sample, just before the end: weight gamma^1
    assert [(e, n) for (e, _), n in zip(traj.intermediate(), traj.evaluations, strict=False)] == [
        (1, 3)
    ]
    # stopping in the first segment leaves the final iterate alone: no intermediate sample
    _, _, first = solve(max_iter=9, tol=0.3, k=3)
    assert first.segments == (1,) and first.evaluations == (3,) and first.intermediate() == []


def test_the_recorder_holds_at_most_k_points_and_copies_them():
    seen: list[Tensor] = []

    def f(z: Tensor) -> Tensor:
        seen.append(z)
        return halving(z)

    recorder = IterateRecorder(f, 2, 6)
    z = torch.zeros(1, 2, dtype=DT)
    for _ in range(6):
        z = recorder(z)
        assert len(recorder.kept) <= 2
    assert [n for n, _ in recorder.kept.values()] == [3, 6]
    assert all(p is not s for (_, p) in recorder.kept.values() for s in seen)
    assert IterateRecorder(f, 2, 6).trajectory(StateSpec(((2,),))) is None  # never called


class Affine(Cell):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3).double()
        with torch.no_grad():
            self.lin.weight.mul_(0.3 / torch.linalg.matrix_norm(self.lin.weight, ord=2))

    def inject(self, x: Tensor) -> Tensor:
        return x

    def init_state(self, injection: Tensor) -> tuple[Tensor]:
        return (torch.zeros_like(injection),)

    def forward(self, z, injection):
        return (self.lin(z[0]) + injection,)


@pytest.mark.parametrize("gradient", ["jfb", "ift", "unrolled"])
def test_the_layer_records_only_training_forwards_that_ask(gradient):
    x = torch.randn(4, 3, dtype=DT)
    deq = DEQ(Affine(), "fixed-point", gradient, f_max_iter=8, f_tol=1e-30)
    deq(x)
    assert deq.trajectory is None  # off by default: nothing recorded
    deq.keep_iterates = 4
    out = deq(x)
    traj = deq.trajectory
    assert traj.evaluations == (2, 4, 6, 8) and traj.k == 4
    (_, state), *_ = traj.corrected()
    assert state[0].shape == (4, 3) and state[0].requires_grad
    out[0].sum().backward()  # the layer's own gradient is untouched by the recording
    with deq.overridden(f_max_iter=4):  # a side computation (gradient checks): not recorded
        deq(x)
    assert deq.trajectory is None
    deq.eval()
    deq(x)
    assert deq.trajectory is None
    deq.train()
    with torch.no_grad():
        deq(x)
    assert deq.trajectory is None
