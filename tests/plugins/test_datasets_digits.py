"""The digits plugin: scikit-learn's bundled handwritten digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from deqbench.errors import ConfigError
from deqbench.plugins import lookup


def digits(**kwargs):
    return lookup("datasets", "digits").obj(**kwargs)


@pytest.fixture(scope="module")
def source():
    return digits(image_size=32)


def test_declaration_and_split_sizes(source):
    info = source.info
    assert (info.task, info.num_classes, info.in_channels, info.ignore_index) == (
        "classification",
        10,
        1,
        None,
    )
    assert info.splits == ("train", "test")
    train, test = source.dataset("train"), source.dataset("test")
    assert (len(train), len(test)) == (1437, 360)  # 1,797 split 80/20
    image, label = train[0]
    assert image.shape == (1, 32, 32) and isinstance(label, int)
    indices = np.concatenate([source.indices["train"], source.indices["test"]])
    assert sorted(indices.tolist()) == list(range(1797))  # disjoint, nothing lost


def test_split_is_deterministic_and_seeded(source):
    again = digits(image_size=32)
    for split in ("train", "test"):
        assert torch.equal(again.dataset(split).images, source.dataset(split).images)
        assert torch.equal(again.dataset(split).targets, source.dataset(split).targets)
    other = digits(image_size=32, seed=1)
    assert not np.array_equal(other.indices["test"], source.indices["test"])


def test_classes_are_balanced(source):
    per_class = np.bincount(load_digits().target, minlength=10)  # 174..183 per digit
    for split, fraction in (("train", 0.8), ("test", 0.2)):
        counts = source.dataset(split).class_counts(10).numpy()
        assert np.all(np.abs(counts - fraction * per_class) <= 1), (split, counts)


def test_normalized_upsampled_real_digits(source):
    train = source.dataset("train").images
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-4
    # Pooling the 32×32 image back to 8×8 recovers the scikit-learn digit (up to scale).
    original = torch.from_numpy(load_digits().images[source.indices["train"][:50]]).float()
    pooled = F.avg_pool2d(train[:50], 4)[:, 0]
    corr = torch.corrcoef(torch.stack([pooled.flatten(), original.flatten()]))[0, 1]
    assert corr > 0.97
    small = digits(image_size=16)
    assert small.dataset("test")[0][0].shape == (1, 16, 16)


def test_bad_options():
    with pytest.raises(ConfigError, match="image_size must be >= 8"):
        digits(image_size=4)
    with pytest.raises(ConfigError, match="no option 'sed'; did you mean 'seed'"):
        digits(sed=1)


def check(**kwargs):
    return lookup("datasets", "digits").obj.check(**kwargs)


def test_check_loads_nothing_and_fails_as_the_constructor_does(monkeypatch):
    from deqbench_plugins.datasets import digits as module

    def fail(*args, **kwargs):
        raise AssertionError("check loaded the digits")

    monkeypatch.setattr(module, "load_digits", fail)
    assert check(image_size=16, seed=3) is None and check(root="/nowhere") is None
    for kwargs in ({"image_size": 4}, {"sed": 1}):
        with pytest.raises(ConfigError) as built:
            digits(**kwargs)
        with pytest.raises(ConfigError) as checked:
            check(**kwargs)
        assert str(checked.value) == str(built.value)
