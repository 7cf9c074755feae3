"""The imagenet plugin on generated JPEG class folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from deqbench.data import DatasetError
from deqbench.errors import ConfigError, DeqbenchError
from deqbench.plugins import lookup
from deqbench.testing import corrupt_file, make_imagenet_folder
from deqbench.testing.datasets import class_colour
from deqbench_plugins.datasets import imagenet as imagenet_module

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def imagenet(**kwargs):
    return lookup("datasets", "imagenet").obj(**kwargs)


@pytest.fixture
def root(tmp_path):
    make_imagenet_folder(tmp_path, classes=3, per_class=4, size=(48, 64))
    return tmp_path


def test_sizes_labels_and_class_count(root):
    source = imagenet(root=root, image_size=32)
    info = source.info
    assert (info.task, info.num_classes, info.in_channels, info.ignore_index) == (
        "classification",
        3,
        3,
        None,
    )
    assert info.splits == ("train", "val")
    for split in info.splits:
        data = source.dataset(split)
        assert len(data) == 12
        for index in (0, 5, 11):
            image, label = data[index]
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32
            assert label == index // 4  # class folders sorted, four images each
            # Each class is one solid colour: normalization undone, it must come back.
            rgb = (image * STD + MEAN).mean(dim=(1, 2)) * 255
            assert torch.allclose(
                rgb, torch.tensor(class_colour(label), dtype=torch.float32), atol=3
            )


def test_root_from_environment(root, monkeypatch):
    monkeypatch.setenv("IMAGENET_ROOT", str(root))
    assert imagenet(root="").info.num_classes == 3  # "" = not set in the suite


def test_train_is_augmented_and_val_is_deterministic(tmp_path):
    make_imagenet_folder(tmp_path, classes=2, per_class=1)
    gradient = np.tile(np.linspace(0, 255, 80, dtype=np.uint8)[None, :, None], (60, 1, 3))
    for split in ("train", "val"):
        Image.fromarray(gradient).save(tmp_path / split / "n00000000" / "n00000000_0.JPEG")
    source = imagenet(root=tmp_path, image_size=24)
    torch.manual_seed(0)
    draws = [source.dataset("train")[0][0] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    val = source.dataset("val")
    first, second = val[0][0], val[0][0]
    assert torch.equal(first, second) and first.shape == (3, 24, 24)
    # Resize (shorter side 24·256/224 ≈ 27: 27×36) then the central 24 columns of the ramp.
    ramp = (first * STD + MEAN)[0].mean(dim=0)
    assert 0.05 < ramp[0] < ramp[-1] < 0.95 and bool((ramp.diff() > 0).all())


def test_default_size_is_224(root):
    image, _ = imagenet(root=root).dataset("val")[0]
    assert image.shape == (3, 224, 224)


def test_missing_root(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=f"{re.escape(str(missing))}.*expected ROOT/train"):
        imagenet(root=missing)
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    with pytest.raises(DatasetError, match="IMAGENET_ROOT"):
        imagenet()


def test_wrong_layout(tmp_path):
    make_imagenet_folder(tmp_path, classes=2, per_class=1, splits=("train",))
    val = re.escape(str(tmp_path / "val"))
    with pytest.raises(DatasetError, match=f"{val} is missing; expected"):
        imagenet(root=tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetError, match="class folder"):
        imagenet(root=tmp_path)
    make_imagenet_folder(tmp_path, classes=3, per_class=1, splits=("val",))
    with pytest.raises(DatasetError, match=r"different class folders.*n00000002"):
        imagenet(root=tmp_path)


def test_corrupt_image_names_the_file(root):
    bad = corrupt_file(root / "val" / "n00000001" / "n00000001_2.JPEG")
    data = imagenet(root=root, image_size=32).dataset("val")
    data[0]  # the others still load
    with pytest.raises(DatasetError, match=f"corrupt image {re.escape(str(bad))}"):
        data[6]


def test_unknown_option_and_split(root):
    with pytest.raises(ConfigError, match="no option 'augment'"):
        imagenet(root=root, augment=True)
    with pytest.raises(DatasetError, match="no split 'test'; available: train, val"):
        imagenet(root=root).dataset("test")


def check(**kwargs):
    return lookup("datasets", "imagenet").obj.check(**kwargs)


def same_error(**kwargs) -> str:
    """The constructor's and `check`'s error for ``kwargs``: same type, same message."""
    with pytest.raises(DeqbenchError) as built:
        imagenet(**kwargs)
    with pytest.raises(DeqbenchError) as checked:
        check(**kwargs)
    assert type(checked.value) is type(built.value)
    assert str(checked.value) == str(built.value)
    return str(checked.value)


def test_check_opens_no_image_and_lists_only_the_split_folders(root, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("check read the data")

    monkeypatch.setattr(torchvision.datasets, "ImageFolder", fail)
    monkeypatch.setattr(imagenet_module, "ImageFolder", fail)
    monkeypatch.setattr(Image, "open", fail)
    listed = []
    scandir, listdir = os.scandir, os.listdir
    monkeypatch.setattr(os, "scandir", lambda path=".": listed.append(path) or scandir(path))
    monkeypatch.setattr(os, "listdir", lambda path=".": listed.append(path) or listdir(path))
    assert check(root=root, image_size=32) is None
    assert sorted(Path(p) for p in listed) == [root / "train", root / "val"]  # not the classes'
    with pytest.raises(AssertionError, match="read the data"):
        imagenet(root=root)  # the constructor does scan


def test_check_root_from_environment(root, monkeypatch):
    monkeypatch.setenv("IMAGENET_ROOT", str(root))
    assert check(root="") is None and check() is None
    monkeypatch.setenv("IMAGENET_ROOT", str(root / "nowhere"))
    assert "nowhere is not a directory" in same_error()


def test_check_fails_as_the_constructor_does(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    assert "IMAGENET_ROOT" in same_error()
    assert "expected ROOT/train" in same_error(root=tmp_path / "nowhere")
    make_imagenet_folder(tmp_path, classes=2, per_class=1, splits=("train",))
    assert f"{tmp_path / 'val'} is missing" in same_error(root=tmp_path)
    (tmp_path / "val").mkdir()
    assert "has no class folders" in same_error(root=tmp_path)
    make_imagenet_folder(tmp_path, classes=3, per_class=1, splits=("val",))
    assert "different class folders (e.g. n00000002)" in same_error(root=tmp_path)
    make_imagenet_folder(tmp_path, classes=3, per_class=1, splits=("train",))
    assert "no option 'augment'" in same_error(root=tmp_path, augment=True)


def test_check_misses_only_what_the_images_show(root):
    # A class folder without images is found by the scan, when the source is built.
    for image in (root / "val" / "n00000001").iterdir():
        image.unlink()
    assert check(root=root) is None
    with pytest.raises(DatasetError, match=r"n00000001.*expected ROOT/train"):
        imagenet(root=root)
