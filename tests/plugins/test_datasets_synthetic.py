"""The synthetic plugin: deterministic, and learnable by a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deqbench.errors import ConfigError
from deqbench.plugins import lookup


def synthetic(**kwargs):
    return lookup("datasets", "synthetic").obj(**kwargs)


def tensors(source, split):
    data = source.dataset(split)
    return data.images, data.targets


def fit(model: nn.Module, images, targets, steps: int, lr: float) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(images), targets).backward()
        opt.step()


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_deterministic_for_a_seed(task):
    a = synthetic(task=task, image_size=12, length=16, seed=3)
    b = synthetic(task=task, image_size=12, length=16, seed=3)
    c = synthetic(task=task, image_size=12, length=16, seed=4)
    for split in ("train", "val"):
        for x, y in zip(tensors(a, split), tensors(b, split), strict=True):
            assert torch.equal(x, y)
        assert not torch.equal(tensors(a, split)[0], tensors(c, split)[0])
    assert not torch.equal(tensors(a, "train")[0][:4], tensors(a, "val")[0][:4])


def test_classification_declaration_and_balance():
    source = synthetic(image_size=8, length=40, num_classes=4, channels=2)
    info = source.info
    assert (info.task, info.num_classes, info.in_channels, info.ignore_index) == (
        "classification",
        4,
        2,
        None,
    )
    assert info.splits == ("train", "val")
    image, label = source.dataset("train")[0]
    assert image.shape == (2, 8, 8) and isinstance(label, int)
    assert source.dataset("train").class_counts(4).tolist() == [10, 10, 10, 10]
    assert len(source.dataset("val")) == 10  # eval_length defaults to length // 4


def test_a_logistic_regression_learns_classification():
    source = synthetic(image_size=16, length=300, eval_length=200, num_classes=10)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    fit(model, *tensors(source, "train"), steps=40, lr=0.01)
    images, labels = tensors(source, "val")
    accuracy = (model(images).argmax(1) == labels).float().mean()
    assert accuracy > 0.9  # chance: 0.1


def test_segmentation_masks_and_a_small_conv_learns_them():
    source = synthetic(task="segmentation", image_size=16, length=128, eval_length=64)
    info = source.info
    assert (info.task, info.num_classes, info.ignore_index) == ("segmentation", 4, 255)
    image, mask = source.dataset("train")[0]
    assert image.shape == (3, 16, 16) and mask.shape == (16, 16) and mask.dtype == torch.int64
    images, masks = tensors(source, "train")
    assert set(masks.unique().tolist()) == {0, 1, 2, 3}
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))
    fit(model, images, masks, steps=60, lr=0.03)
    images, masks = tensors(source, "val")
    predicted = model(images).argmax(1)
    background = (masks == 0).float().mean()
    accuracy = (predicted == masks).float().mean()
    foreground = (predicted == masks)[masks > 0].float().mean()
    assert accuracy > max(0.9, background + 0.1) and foreground > 0.8


def test_bad_options():
    with pytest.raises(ConfigError, match="task='segmentaton' is not valid; did you mean"):
        synthetic(task="segmentaton")
    with pytest.raises(ConfigError, match="no option 'lenght'; did you mean 'length'"):
        synthetic(lenght=3)
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 2"):
        synthetic(num_classes=1)


def check(**kwargs):
    return lookup("datasets", "synthetic").obj.check(**kwargs)


def test_check_generates_nothing_and_fails_as_the_constructor_does(monkeypatch):
    from deqbench_plugins.datasets.synthetic import Synthetic

    def fail(*args, **kwargs):
        raise AssertionError("check generated data")

    monkeypatch.setattr(Synthetic, "_generate", fail)
    assert check(task="segmentation", image_size=8, length=4, root="/nowhere") is None
    bad = ({"task": "segmentaton"}, {"lenght": 3}, {"num_classes": 1}, {"image_size": 2})
    for kwargs in bad:
        with pytest.raises(ConfigError) as built:
            synthetic(**kwargs)
        with pytest.raises(ConfigError) as checked:
            check(**kwargs)
        assert str(checked.value) == str(built.value)
