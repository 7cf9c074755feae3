"""The explicit baselines: torchvision ResNets at any class count with a 32x32 stem, and the
explicit MDEQ control (the same cell unrolled L times)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from deqbench.errors import DeqbenchError
from deqbench.models import parameter_count
from deqbench.plugins import get_registry


def _build(name: str, **kw):
    return get_registry().get("models", name).obj(**kw)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101"])
def test_resnet_parameter_counts_are_torchvisions(arch):
    with torch.device("meta"):
        ours = _build(arch, num_classes=1000, image_size=224)
        ref = getattr(torchvision.models, arch)(weights=None)
    assert parameter_count(ours) == parameter_count(ref)
    assert not ours.implicit and ours.stats is None


def test_resnet18_small_stem_any_classes_one_channel():
    torch.manual_seed(0)
    model = _build("resnet18", num_classes=7, in_channels=1, image_size=32)
    assert model.net.conv1.kernel_size == (3, 3) and model.net.conv1.stride == (1, 1)
    assert isinstance(model.net.maxpool, torch.nn.Identity)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    model.set_unrolled(True)  # explicit models ignore the warm-up switch
    assert not model.unrolled
    big = _build("resnet18", num_classes=3, image_size=224)
    assert big.net.conv1.kernel_size == (7, 7)


def test_resnet_takes_no_head():
    with pytest.raises(ValueError, match="head"):
        _build("resnet18", num_classes=3, head="classification")


def test_explicit_mdeq_is_the_mdeq_cell_unrolled_depth_times():
    torch.manual_seed(0)
    mdeq = _build("mdeq-cpu-small", num_classes=10, in_channels=1, unroll=5).train()
    explicit = _build("explicit-mdeq", num_classes=10, in_channels=1, variant="cpu-small", depth=5)
    explicit.train()
    state = {k.removeprefix("deq."): v for k, v in mdeq.state_dict().items()}
    explicit.load_state_dict(state)
    assert not explicit.implicit
    mdeq.set_unrolled(True)
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(explicit(x), mdeq(x))
    explicit(x).sum().backward()
    assert all(p.grad is not None for p in explicit.parameters() if p.requires_grad)
    assert parameter_count(explicit) == parameter_count(mdeq)


def test_explicit_mdeq_default_depth_segmentation_and_bad_variant():
    model = _build("explicit-mdeq", num_classes=4, variant="cifar-tiny", head="segmentation")
    assert model.depth == 10 and model.task == "segmentation"
    assert model(torch.randn(1, 3, 12, 12)).shape == (1, 4, 12, 12)
    with pytest.raises(DeqbenchError, match="did you mean 'cifar-tiny'"):
        _build("explicit-mdeq", num_classes=4, variant="cifar-tiyn")
