"""The cell conformance kit on every registered cell, and on cells it must reject."""

from __future__ import annotations

import pytest
import torch

from deqbench.plugins import get_cell, get_registry
from deqbench.testing import ToyCell, check_cell

# Registered cells are built with their defaults unless they are large by default.
SMALL = {"conv": {"channels": 4, "height": 8, "width": 8}}


@pytest.mark.parametrize("name", get_registry().names("cells"))
def test_every_registered_cell_conforms(name):
    cell = get_cell(name, **SMALL.get(name, {}))
    if getattr(cell, "input_shape", None) is None:
        pytest.skip(f"{name} has no input_shape; its suite must give the kit an input")
    check_cell(cell)


def test_the_toy_cell_conforms_with_dropout():
    cell = check_cell(ToyCell(dropout=0.3), torch.randn(3, 5, dtype=torch.float64))
    assert cell.training  # the kit restores the cell's mode


class _InjectsTwice(ToyCell):
    def init_state(self, injection):
        self.inject(torch.zeros(injection.shape[0], 5, dtype=injection.dtype))
        return super().init_state(injection)


class _NoisyInEval(ToyCell):
    def forward(self, z, injection):
        a, b = super().forward(z, injection)
        return a + 1e-3 * torch.randn_like(a), b


class _Reshapes(ToyCell):
    def forward(self, z, injection):
        a, b = super().forward(z, injection)
        return a, b.flatten(1)


class _ResetsEveryStep(ToyCell):
    def forward(self, z, injection):
        self.reset()
        return super().forward(z, injection)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (_InjectsTwice(), "per training forward"),
        (_NoisyInEval(), "deterministic"),
        (_Reshapes(), "forward maps"),
        (_ResetsEveryStep(), "per training forward"),
    ],
)
def test_the_kit_rejects_broken_cells(cell, message):
    with pytest.raises(AssertionError, match=message):
        check_cell(cell)
