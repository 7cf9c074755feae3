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
