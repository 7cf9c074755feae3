"""The MDEQ's init: the reference's effective one by default (weight-normed convs at PyTorch's
conv default, every other conv and bias from N(0, 0.01)), the intended one as an option, and the
reference's BatchNorm layouts (affine-free bottleneck norms, 0.01 momentum in segmentation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deqbench.errors import ConfigError
from deqbench.plugins import get_registry
from deqbench_plugins.mdeq.cell import WNConv2d
from deqbench_plugins.mdeq.heads import Bottleneck


def _build(name: str, **kw):
    return get_registry().get("models", name).obj(**kw)


def _std(tensors) -> float:
    return float(torch.cat([t.detach().flatten() for t in tensors]).std())


def _plain_convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_reference_init_keeps_pytorchs_default_on_the_weight_normed_convs():
    torch.manual_seed(0)
    model = _build("mdeq-cifar-tiny", num_classes=10)
    conv1 = model.cell.blocks[0].conv1  # 24 → 120, 3x3: fan-in 216
    bound = 1 / math.sqrt(216)  # kaiming-uniform with a = √5: U(−1/√fan_in, 1/√fan_in)
    v = conv1.weight_v.detach()
    assert v.abs().max() <= bound and v.abs().max() > 0.99 * bound
    assert _std([v]) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # 0.0393, the 0.039
    # the gain starts at the direction's norm, so the effective weight starts equal to v
    torch.testing.assert_close(conv1.weight_g.detach().flatten(), v.flatten(1).norm(dim=1))
    conv1.compute()
    torch.testing.assert_close(conv1._weight.detach(), v)


def test_reference_init_draws_every_other_conv_and_bias_from_n_0_001():
    torch.manual_seed(0)
    model = _build("mdeq-cifar-large", num_classes=10)
    cell, head = model.cell, model.head
    fuse = [c for row in cell.fuse for layer in row for c in _plain_convs(layer)]
    assert len(fuse) == 6 + 10  # 6 upsampling 1x1s; 1+2+1+3+2+1 stride-2 3x3s downsampling
    for group in (fuse, _plain_convs(cell.stem), _plain_convs(head)):
        assert _std(c.weight for c in group) == pytest.approx(0.01, rel=0.05)
    biases = [c.bias for c in _plain_convs(head) if c.bias is not None]
    assert biases and _std(biases) == pytest.approx(0.01, rel=0.1)
    # GroupNorm and BatchNorm affine parameters at 1 and 0; the linear layer at PyTorch's init
    for m in model.modules():
        if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) and m.affine:
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    fan_in = head.classifier.in_features
    assert head.classifier.weight.abs().max() <= 1 / math.sqrt(fan_in)


def test_intended_init_draws_the_weight_normed_directions_from_n_0_001():
    torch.manual_seed(0)
    model = _build("mdeq-cifar-tiny", num_classes=10, init="intended")
    wn = [m.weight_v for m in model.modules() if isinstance(m, WNConv2d)]
    assert _std(wn) == pytest.approx(0.01, rel=0.05)
    fuse = [c for row in model.cell.fuse for layer in row for c in _plain_convs(layer)]
    assert _std(c.weight for c in fuse) == pytest.approx(0.01, rel=0.1)
    conv = WNConv2d(64, 128, 3, init="intended")
    conv.compute()
    torch.testing.assert_close(conv._weight, conv.weight_v.detach())


def test_init_is_a_model_option_and_a_misspelt_one_says_did_you_mean():
    with pytest.raises(ConfigError, match=r"init 'intendd'.*did you mean 'intended'"):
        _build("mdeq-cpu-small", num_classes=10, in_channels=1, init="intendd")
    explicit = _build("explicit-mdeq", num_classes=10, in_channels=1, init="intended")
    wn = [m.weight_v for m in explicit.modules() if isinstance(m, WNConv2d)]
    assert _std(wn) == pytest.approx(0.01, rel=0.1)


def test_bottleneck_norms_have_no_affine_parameters_but_the_projection_does():
    block = Bottleneck(24, 8)
    norms = [m for m in block.body if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 3 and not any(n.affine for n in norms)
    assert all(n.running_mean is not None for n in norms)  # buffers, as the reference's
    assert block.skip[1].affine


@pytest.mark.parametrize(
    ("name", "head", "momentum"),
    [
        ("mdeq-cityscapes-small", None, 0.01),
        ("mdeq-cpu-small", "segmentation", 0.01),
        ("mdeq-imagenet-small", None, 0.1),
        ("mdeq-cpu-small", None, 0.1),
    ],
)
def test_batchnorm_momentum_is_the_reference_networks(name, head, momentum):
    with torch.device("meta"):
        model = _build(name, num_classes=19, head=head)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    stem = [m for m in model.cell.stem.modules() if isinstance(m, nn.BatchNorm2d)]
    assert stem and norms
    assert {m.momentum for m in norms} == {momentum}  # stem and head alike
