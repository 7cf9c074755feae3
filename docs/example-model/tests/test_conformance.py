"""Run with the example installed: pytest docs/example-model/tests."""

import torch

from deqbench.plugins import get_registry
from deqbench.testing import check_cell


def test_the_cell_conforms():
    check_cell("gated-conv", options={"channels": 8, "image_size": 8})


def test_the_model_trains_a_step():
    model = get_registry().get("models", "gated-conv-small").obj(num_classes=3)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.stats.forward.nfe >= 1


def test_the_head_takes_the_state_tuple():
    registry = get_registry()
    head = registry.get("heads", "pooled-linear").obj([8, 16], num_classes=3)
    state = (torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4))  # one tensor per resolution
    assert head(state).shape == (2, 3)
    model = registry.get("models", "gated-conv-small").obj(num_classes=3, head="pooled-linear")
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)
