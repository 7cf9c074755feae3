"""The cityscapes plugin on generated leftImg8bit / gtFine_labelIds PNGs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deqbench.data import DatasetError
from deqbench.errors import ConfigError, DeqbenchError
from deqbench.plugins import lookup
from deqbench.testing import corrupt_file, label_colour, make_cityscapes

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
#: Label id -> train id, from the Cityscapes label definitions (ignored ones -> 255).
TRAIN_IDS = {0: 255, 1: 255, 4: 255, 7: 0, 8: 1, 11: 2, 23: 10, 24: 11, 26: 13, 33: 18}
ROAD, CAR = 7, 26


def cityscapes(**kwargs):
    return lookup("datasets", "cityscapes").obj(**kwargs)


def rgb(image: torch.Tensor) -> torch.Tensor:
    """Undo the normalization: (3, H, W) in 0..255."""
    return (image * STD + MEAN) * 255


def test_train_id_mapping_and_full_resolution_eval(tmp_path):
    ids = np.array(list(TRAIN_IDS), dtype=np.uint8).repeat(4)[None, :].repeat(8, axis=0)
    make_cityscapes(tmp_path, n=2, size=ids.shape, cities=("bonn", "aachen"), label_ids=ids)
    source = cityscapes(root=tmp_path)
    info = source.info
    assert (info.task, info.num_classes, info.ignore_index, info.splits) == (
        "segmentation",
        19,
        255,
        ("train", "val"),
    )
    val = source.dataset("val")
    assert len(val) == 4
    assert [p.split("/")[-2] for p in val.images] == ["aachen", "aachen", "bonn", "bonn"]
    image, mask = val[0]
    assert image.shape == (3, *ids.shape) and mask.shape == ids.shape  # full resolution
    assert mask.dtype == torch.int64
    expected = torch.tensor([[TRAIN_IDS[int(i)] for i in row] for row in ids])
    assert torch.equal(mask, expected)
    assert torch.allclose(
        rgb(image), torch.from_numpy(label_colour(ids)).permute(2, 0, 1).float(), atol=1e-3
    )


def test_joint_transform_keeps_image_and_mask_aligned(tmp_path):
    # An off-centre car on the road: a flip or crop applied to one of image/mask only would
    # put car pixels under road colour.
    ids = np.full((40, 64), ROAD, dtype=np.uint8)
    ids[6:22, 8:28] = CAR
    make_cityscapes(tmp_path, n=1, size=ids.shape, label_ids=ids)
    train = cityscapes(root=tmp_path, crop_size=[24, 40]).dataset("train")
    colour = {
        0: torch.tensor(label_colour(np.array(ROAD)), dtype=torch.float32),
        13: torch.tensor(label_colour(np.array(CAR)), dtype=torch.float32),
        255: torch.zeros(3),  # padding: image 0, mask ignore
    }
    car_areas, padded, checked = set(), 0, 0
    for seed in range(12):
        torch.manual_seed(seed)
        image, mask = train[0]
        assert image.shape == (3, 24, 40) and mask.shape == (24, 40)
        assert set(mask.unique().tolist()) <= {0, 13, 255}
        pixels = rgb(image).permute(1, 2, 0)
        for train_id, want in colour.items():
            # Pixels whose 5×5 neighbourhood in the mask is all this class: away from the rim,
            # where the image's antialiased resize blends colours and the mask's nearest does not.
            same = (mask == train_id).float()[None, None]
            inner = -F.max_pool2d(-same, 5, stride=1, padding=2)[0, 0] > 0.5
            if inner.any():
                close = (pixels[inner] - want).abs().max(dim=1).values < 12
                assert close.all(), (seed, train_id)
                checked += int(inner.sum())
        car_areas.add(int((mask == 13).sum()))
        padded += bool((mask == 255).any())
    assert len(car_areas) > 3  # the random scale changes the car's size
    assert checked > 12 * 24 * 40 // 3
    assert padded > 0  # scales below 0.6 leave less than the crop: padded with ignore


def test_random_scale_range():
    from deqbench_plugins.datasets.cityscapes import RandomScale

    scale = RandomScale((0.5, 2.0))
    torch.manual_seed(0)
    heights = [scale.make_params([torch.zeros(3, 100, 200)])["size"][0] for _ in range(200)]
    assert 50 <= min(heights) < 60 and 190 < max(heights) <= 200


def test_image_size_rescales_both_splits(tmp_path):
    make_cityscapes(tmp_path, n=1, size=(32, 64))
    source = cityscapes(root=tmp_path, image_size=16, crop_size=8)
    image, mask = source.dataset("val")[0]
    assert image.shape == (3, 16, 32) and mask.shape == (16, 32)
    assert source.dataset("train")[0][1].shape == (8, 8)


def test_missing_root_and_wrong_layout(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=f"{re.escape(str(tmp_path / 'x'))}.*leftImg8bit"):
        cityscapes(root=tmp_path / "x")
    monkeypatch.delenv("CITYSCAPES_ROOT", raising=False)
    with pytest.raises(DatasetError, match="CITYSCAPES_ROOT"):
        cityscapes()
    make_cityscapes(tmp_path, n=1, splits=("train",))
    val = re.escape(str(tmp_path / "leftImg8bit" / "val"))
    with pytest.raises(DatasetError, match=f"{val} is missing"):
        cityscapes(root=tmp_path)
    pairs = make_cityscapes(tmp_path, n=2, splits=("val",))
    pairs[1][1].unlink()
    with pytest.raises(DatasetError, match=f"has no mask {re.escape(str(pairs[1][1]))}"):
        cityscapes(root=tmp_path)


def test_env_root_and_corrupt_file(tmp_path, monkeypatch):
    pairs = make_cityscapes(tmp_path, n=2, splits=("val", "train"))
    monkeypatch.setenv("CITYSCAPES_ROOT", str(tmp_path))
    val = cityscapes().dataset("val")
    bad = corrupt_file(pairs[1][1])
    val[0]
    with pytest.raises(DatasetError, match=f"corrupt image {re.escape(str(bad))}"):
        val[1]


def test_bad_crop_size(tmp_path):
    make_cityscapes(tmp_path, n=1)
    with pytest.raises(ConfigError, match=r"crop_size must be \[height, width\]"):
        cityscapes(root=tmp_path, crop_size=[1, 2, 3])


def test_a_mask_of_another_size_than_its_image_is_named(tmp_path):
    from PIL import Image

    # The training transforms failed naming no file; evaluation went on with a wrong mask.
    pairs = make_cityscapes(tmp_path, n=2, size=(32, 64), splits=("val", "train"))
    source = cityscapes(root=tmp_path)
    for (image, mask), split in ((pairs[1], "val"), (pairs[3], "train")):
        Image.open(mask).resize((32, 16), Image.NEAREST).save(mask)  # another pair's mask
        data = source.dataset(split)
        data[0]
        with pytest.raises(DatasetError) as err:
            data[1]
        message = str(err.value)
        assert f"mask {mask} is 32×16 (W×H) but its image {image} is 64×32 (W×H)" in message


def check(**kwargs):
    return lookup("datasets", "cityscapes").obj.check(**kwargs)


def same_error(**kwargs) -> str:
    """The constructor's and `check`'s error for ``kwargs``: same type, same message."""
    with pytest.raises(DeqbenchError) as built:
        cityscapes(**kwargs)
    with pytest.raises(DeqbenchError) as checked:
        check(**kwargs)
    assert type(checked.value) is type(built.value)
    assert str(checked.value) == str(built.value)
    return str(checked.value)


def test_check_opens_no_image(tmp_path, monkeypatch):
    from PIL import Image

    from deqbench_plugins.datasets import cityscapes as module

    pairs = make_cityscapes(tmp_path, n=2, cities=("bonn", "aachen"))

    def fail(*args, **kwargs):
        raise AssertionError("check read the data")

    monkeypatch.setattr(Image, "open", fail)
    monkeypatch.setattr(module, "open_image", fail)
    monkeypatch.setattr(module.datasets, "Cityscapes", fail)
    corrupt_file(pairs[0][0])  # no file is read, so a corrupt one passes
    assert check(root=tmp_path, image_size=16, crop_size=[8, 16]) is None
    monkeypatch.setenv("CITYSCAPES_ROOT", str(tmp_path))
    assert check() is None


def test_check_fails_as_the_constructor_does(tmp_path, monkeypatch):
    assert "leftImg8bit" in same_error(root=tmp_path / "x")
    monkeypatch.delenv("CITYSCAPES_ROOT", raising=False)
    assert "CITYSCAPES_ROOT" in same_error()
    make_cityscapes(tmp_path, n=1, splits=("train",))
    assert f"{tmp_path / 'leftImg8bit' / 'val'} is missing" in same_error(root=tmp_path)
    pairs = make_cityscapes(tmp_path, n=2, splits=("val",))
    pairs[1][1].unlink()
    assert f"has no mask {pairs[1][1]}" in same_error(root=tmp_path)
    make_cityscapes(tmp_path, n=2, splits=("val",))
    (tmp_path / "leftImg8bit" / "train" / "aachen" / "notes.txt").write_text("")
    assert "unexpected file notes.txt" in same_error(root=tmp_path)
    (tmp_path / "leftImg8bit" / "train" / "aachen" / "notes.txt").unlink()
    assert "crop_size must be [height, width]" in same_error(root=tmp_path, crop_size=[1, 2, 3])
    assert "did you mean 'crop_size'" in same_error(root=tmp_path, crop=[8, 8])
