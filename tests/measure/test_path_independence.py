"""Path independence (`deqbench.measure.path_independence`) and the DEQ layer's ``init`` seam:
a contraction reaches one equilibrium from every start; a cell with two stable fixed points
reaches the one whose basin a start lies in, so the expected agreement is known by hand."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from deqbench.cell import Cell
from deqbench.deq import DEQ
from deqbench.measure.path_independence import path_independence, start_from
from deqbench.models import DEQSettings, Model
from deqbench.state import State
from deqbench.testing.train_toys import tiny_deq


class Bistable(Cell):
    """``z ↦ tanh(3z) + 0.01·x`` on a scalar state: stable fixed points near ±1 (the one of
    sign(x) lies nearer), an unstable one near 0. From zero, naive iteration goes to sign(x)."""

    def inject(self, x: Tensor) -> Tensor:
        return 0.01 * x

    def init_state(self, injection: Tensor) -> State:
        return (torch.zeros_like(injection),)

    def forward(self, z: State, injection: Tensor) -> State:
        return (torch.tanh(3 * z[0]) + injection,)


class Sign(Model):
    """Class 1 where the equilibrium is positive, else 0."""

    def __init__(self) -> None:
        super().__init__()
        self.deq = DEQ(Bistable(), "fixed-point", "ift", f_max_iter=200, f_tol=1e-7)

    def forward(self, x: Tensor) -> Tensor:
        z = self.deq(x)[0]
        return torch.cat([-z, z], dim=1)


X = torch.tensor([[1.0], [-1.0], [1.0], [-1.0], [1.0]], dtype=torch.float64)


def test_a_contraction_reaches_the_same_equilibrium_from_every_start():
    torch.manual_seed(0)
    model = tiny_deq(num_classes=3, in_channels=1, image_size=4, deq=DEQSettings(f_tol=1e-10))
    model.eval()
    x = torch.randn(16, 1, 4, 4)
    results = path_independence(model, x, seed=3)
    assert set(results) == {"noise", "swap"}
    for result in results.values():
        assert result.agreement == 1.0 and result.agree.shape == (16,)
        assert result.distance.shape == (16,) and result.distance_median < 1e-5


def test_with_two_fixed_points_the_start_decides():
    model = Sign().double().eval()
    default = model(X).argmax(1)
    assert default.tolist() == [1, 0, 1, 0, 1]  # zero start: sign(x)
    results = path_independence(model, X, seed=0)
    # swap: sample i starts at sample i-1's equilibrium, ±1, deep in that basin: it agrees only
    # where x_i and x_(i-1) have one sign (sample 0 starts at sample 4's, both positive)
    swap = results["swap"]
    assert swap.agree.tolist() == [True, False, False, False, False]
    assert swap.agreement == pytest.approx(1 / 5)
    # the disagreeing ones ended at the other fixed point: ‖z − z*‖/‖z*‖ ≈ 2
    assert swap.distance[0] < 1e-5 and swap.distance_median == pytest.approx(2, abs=0.05)
    # noise: the sign of the draw (scale |z*| ≈ 1, far from the unstable point) picks the basin
    draws = torch.randn(5, 1, generator=torch.Generator().manual_seed(0))
    expected = (draws[:, 0] > 0).long() == default
    assert results["noise"].agree.tolist() == expected.tolist()
    assert results["noise"].agreement == pytest.approx(expected.double().mean().item())
    assert 0 < results["noise"].agreement < 1  # seed 0 draws both signs here


def test_the_noise_start_has_each_samples_scale_and_is_seeded():
    z = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    a, b = start_from("noise", z, seed=1), start_from("noise", z, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, start_from("noise", z, seed=2))
    assert torch.equal(a[1], torch.zeros(4)) and a[0].abs().max() > 0
    assert torch.equal(start_from("swap", z), z.flip(0))
    with pytest.raises(ValueError, match="unknown start 'zeros'"):
        start_from("zeros", z)


def test_the_layer_starts_where_init_says_and_is_restored_afterwards():
    model = Sign().double().eval()
    model(X)
    stats = model.deq.stats
    starts = []

    def minus_one(z0: Tensor, bound) -> Tensor:
        starts.append(z0.clone())
        return -torch.ones_like(z0)

    with model.deq.overridden(init=minus_one):
        assert model(X).argmax(1).tolist() == [0] * 5  # all in the negative basin
    assert torch.equal(starts[0], torch.zeros(5, 1, dtype=torch.float64))  # init_state's start
    assert model.deq.init is None and model.deq.stats is stats
    short = r"DEQ.init must return a \(5, 1\) start, got \(2, 1\)"
    with (
        model.deq.overridden(init=lambda z0, bound: z0[:2]),
        pytest.raises(ValueError, match=short),
    ):
        model(X)


def test_an_explicit_model_has_no_path_to_compare():
    class Explicit(Model):
        def forward(self, x: Tensor) -> Tensor:
            return x

    with pytest.raises(ValueError, match="explicit"):
        path_independence(Explicit(), X)
