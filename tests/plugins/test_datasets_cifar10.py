"""The cifar10 plugin on python-pickle batches written in the official format."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torch.nn.functional as F

from deqbench.data import DatasetError
from deqbench.errors import ConfigError, DeqbenchError
from deqbench.plugins import lookup
from deqbench.testing import corrupt_file, make_cifar10

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


def cifar10(**kwargs):
    return lookup("datasets", "cifar10").obj(**kwargs)


def pixels(image: torch.Tensor) -> torch.Tensor:
    """A normalized float image back to its uint8 pixel values."""
    return ((image * STD + MEAN) * 255).round().to(torch.uint8)


@pytest.fixture
def written(tmp_path):
    return make_cifar10(tmp_path, n=4)


def test_images_and_labels(tmp_path, written):
    source = cifar10(root=tmp_path)
    assert source.info.splits == ("train", "test")
    assert (source.info.task, source.info.num_classes, source.info.ignore_index) == (
        "classification",
        10,
        None,
    )
    assert source.classes[0] == "airplane" and source.classes[9] == "truck"
    for split, size in (("train", 20), ("test", 4)):
        data, (images, labels) = source.dataset(split), written[split]
        assert len(data) == size
        for index in range(size):
            image, label = data[index]
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32
            assert label == labels[index]
            assert torch.equal(pixels(image), torch.from_numpy(images[index]))


def test_root_may_be_the_batches_folder_or_come_from_the_environment(
    tmp_path, written, monkeypatch
):
    assert len(cifar10(root=tmp_path / "cifar-10-batches-py").dataset("test")) == 4
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path))
    assert len(cifar10().dataset("train")) == 20


def _is_crop_or_flip(out: torch.Tensor, original: torch.Tensor) -> bool:
    """Whether ``out`` is a 32×32 window of ``original`` padded by 4 (zeros), maybe mirrored."""
    padded = F.pad(original, (4, 4, 4, 4))
    for image in (padded, padded.flip(-1)):
        for dy in range(9):
            for dx in range(9):
                if torch.equal(image[:, dy : dy + 32, dx : dx + 32], out):
                    return True
    return False


def test_augmentation_switch(tmp_path, written):
    images = torch.from_numpy(written["train"][0])
    plain = cifar10(root=tmp_path).dataset("train")
    augmented_source = cifar10(root=tmp_path, augment=True)
    augmented = augmented_source.dataset("train")
    torch.manual_seed(0)
    changed = 0
    for index in range(6):
        assert torch.equal(pixels(plain[index][0]), images[index])  # off: the image itself
        out = pixels(augmented[index][0])
        assert _is_crop_or_flip(out, images[index])
        changed += not torch.equal(out, images[index])
    assert changed >= 4  # identity has probability 1/162 per draw
    # The test split is never augmented.
    test_image = augmented_source.dataset("test")[0][0]
    assert torch.equal(pixels(test_image), torch.from_numpy(written["test"][0][0]))


def test_image_size_option(tmp_path, written):
    assert cifar10(root=tmp_path, image_size=40).dataset("test")[0][0].shape == (3, 40, 40)


def test_missing_root_and_wrong_layout(tmp_path, monkeypatch):
    nope = re.escape(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=f"{nope}.*cifar-10-batches-py"):
        cifar10(root=tmp_path / "nope")
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    with pytest.raises(DatasetError, match="CIFAR10_ROOT"):
        cifar10()
    with pytest.raises(DatasetError, match="cifar-10-batches-py is missing"):
        cifar10(root=tmp_path)
    make_cifar10(tmp_path, n=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match="data_batch_4 is missing; expected"):
        cifar10(root=tmp_path)


def test_corrupt_or_foreign_batch_names_the_file(tmp_path, written):
    bad = corrupt_file(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetError, match=f"corrupt batch file {re.escape(str(bad))}"):
        cifar10(root=tmp_path)
    with open(bad, "wb") as f:
        pickle.dump({b"data": [[1, 2, 3]], b"labels": [0]}, f)
    with pytest.raises(DatasetError, match=f"{re.escape(str(bad))} is not a CIFAR-10 batch"):
        cifar10(root=tmp_path)


def test_bad_options(tmp_path, written):
    with pytest.raises(ConfigError, match="no option 'augmnet'; did you mean 'augment'"):
        cifar10(root=tmp_path, augmnet=True)
    with pytest.raises(ConfigError, match="augment must be true or false"):
        cifar10(root=tmp_path, augment="yes")


def check(**kwargs):
    return lookup("datasets", "cifar10").obj.check(**kwargs)


def same_error(**kwargs) -> str:
    """The constructor's and `check`'s error for ``kwargs``: same type, same message."""
    with pytest.raises(DeqbenchError) as built:
        cifar10(**kwargs)
    with pytest.raises(DeqbenchError) as checked:
        check(**kwargs)
    assert type(checked.value) is type(built.value)
    assert str(checked.value) == str(built.value)
    return str(checked.value)


def test_check_unpickles_nothing(tmp_path, written, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("check read a batch")

    monkeypatch.setattr(pickle, "load", fail)
    assert check(root=tmp_path, image_size=40, augment=True) is None
    assert check(root=tmp_path / "cifar-10-batches-py") is None
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path))
    assert check() is None
    with pytest.raises(DatasetError, match="check read a batch"):
        cifar10(root=tmp_path)  # the constructor does


def test_check_fails_as_the_constructor_does(tmp_path, monkeypatch):
    assert "cifar-10-batches-py" in same_error(root=tmp_path / "nope")
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    assert "CIFAR10_ROOT" in same_error()
    assert "cifar-10-batches-py is missing" in same_error(root=tmp_path)
    make_cifar10(tmp_path, n=2)
    for name in ("data_batch_4", "batches.meta"):
        (tmp_path / "cifar-10-batches-py" / name).unlink()
        assert f"{name} is missing; expected" in same_error(root=tmp_path)
    make_cifar10(tmp_path, n=2)
    assert "did you mean 'augment'" in same_error(root=tmp_path, augmnet=True)
    assert "augment must be true or false" in same_error(root=tmp_path, augment="yes")


def test_check_misses_only_what_the_batches_hold(tmp_path, written):
    corrupt_file(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    assert check(root=tmp_path) is None
    with pytest.raises(DatasetError, match="corrupt batch file"):
        cifar10(root=tmp_path)
