"""Saved-for-backward bytes: the meter's arithmetic, and the DEQ memory claim on a tanh cell and
a small conv cell (ift flat in the forward's iterations, unrolled linear, solvers leave none)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deqbench.cell import Cell
from deqbench.deq import DEQ, bind
from deqbench.measure.memory import SavedTensorsMeter
from deqbench.plugins import get_registry, get_solver
from deqbench_plugins.problems import TanhCell

FORWARD_SOLVERS = [n for n in get_registry().names("solvers") if not get_solver(n).affine_only]


class TinyConvCell(Cell):
    """conv3x3 → GroupNorm → ReLU, plus the injection, on a (4, 8, 8) state."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(2, 4)
        self.inj = nn.Conv2d(3, 4, 3, padding=1)
        self.input_shape = (3, 8, 8)

    def inject(self, x):
        return self.inj(x)

    def init_state(self, injection):
        return (torch.zeros_like(injection),)

    def forward(self, z, injection):
        return (torch.relu(self.norm(0.5 * self.conv(z[0]) + injection)),)


CELLS = {"tanh": lambda: TanhCell(dim=32), "conv": TinyConvCell}


def _input(cell, batch=2):
    return torch.randn(batch, *cell.input_shape, generator=torch.Generator().manual_seed(0))


def _saved(cell, x, activations_only=False, **options) -> int:
    deq = DEQ(cell, **options)
    with SavedTensorsMeter(ignore=cell.parameters() if activations_only else ()) as meter:
        deq(x)
    return meter.bytes


def test_meter_counts_each_storage_once():
    a = torch.randn(100, requires_grad=True)  # 400 bytes
    b = torch.randn(50, requires_grad=True)  # 200 bytes
    with SavedTensorsMeter() as meter:
        (a * b.repeat(2)).sum()  # saves a and the repeat (400 + 400)
        (a * a).sum()  # a again: already counted
        a[:10] * a[10:20]  # views of a: same storage
    assert meter.bytes == 800 and meter.count == 2
    assert meter.mb == pytest.approx(800 / 2**20)
    with SavedTensorsMeter(ignore=[a]) as meter:
        (a[:50] * b).sum()  # a ignored, b counted
    assert meter.bytes == 200
    with SavedTensorsMeter() as meter, torch.no_grad():
        (a * b.repeat(2)).sum()
    assert meter.bytes == 0


def test_meter_counts_a_reused_address_again():
    with SavedTensorsMeter() as meter:
        for _ in range(3):  # each graph dies before the next allocates, addresses may repeat
            x = torch.randn(256, requires_grad=True)
            (x * x).sum().backward()
    assert meter.bytes == 3 * 1024 and meter.count == 3


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_ift_memory_is_flat_in_forward_iterations(kind):
    cell = CELLS[kind]()
    x = _input(cell)
    few, many = (_saved(cell, x, f_max_iter=n, f_tol=1e-12) for n in (5, 30))
    assert few > 0 and abs(many - few) <= 0.05 * few


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_unrolled_memory_grows_linearly(kind):
    cell = CELLS[kind]()
    x = _input(cell)
    sizes = [_saved(cell, x, gradient="unrolled", f_max_iter=n) for n in (5, 10, 15, 30)]
    step = sizes[1] - sizes[0]
    assert step > 0 and sizes[2] - sizes[1] == step and sizes[3] - sizes[2] == 3 * step
    # activations alone: 30 layers against one application of f
    unrolled = _saved(cell, x, activations_only=True, gradient="unrolled", f_max_iter=30)
    assert unrolled > 10 * _saved(cell, x, activations_only=True, f_max_iter=30)


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("solver", FORWARD_SOLVERS)
def test_the_forward_solver_keeps_nothing_for_the_backward(kind, solver):
    cell = CELLS[kind]()
    x = _input(cell)
    # one application of f with gradients, plus the injection: all ift may keep
    with SavedTensorsMeter() as meter:
        bound = bind(cell, x)
        bound.f(bound.z0.clone().requires_grad_())
    assert _saved(cell, x, solver=solver, f_max_iter=20) == meter.bytes


def test_phantom_memory_grows_with_k_not_with_the_solve():
    cell = TanhCell(dim=32)
    x = _input(cell)
    k2 = _saved(cell, x, gradient="phantom", gradient_options={"k": 2}, f_max_iter=30)
    k4 = _saved(cell, x, gradient="phantom", gradient_options={"k": 4}, f_max_iter=30)
    assert k4 > k2 == _saved(cell, x, gradient="phantom", gradient_options={"k": 2}, f_max_iter=5)


def test_eval_keeps_nothing_unless_the_graph_is_kept():
    cell = TinyConvCell()
    x = _input(cell)
    deq = DEQ(cell, f_max_iter=10).eval()
    with SavedTensorsMeter() as meter:
        deq(x)
    assert meter.bytes == 0
    deq.keep_graph_in_eval = True
    with SavedTensorsMeter() as meter:
        deq(x)
    assert meter.bytes == _saved(cell, x, f_max_iter=10)
