"""Cityscapes (fine annotations) with the 19 train ids and the paper's joint transforms.

File discovery and pairing come from torchvision's ``Cityscapes``; this module checks the
layout first (torchvision only says "Dataset not found or incomplete"), sorts the pairs (it lists
directories in filesystem order), maps label ids to train ids and applies joint image–mask
transforms from ``transforms.v2``, which resize masks with nearest-neighbour interpolation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from deqbench.data import DatasetError, DatasetInfo, DataSource
from deqbench.errors import ConfigError
from deqbench_plugins.datasets.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_options,
    check_split,
    open_image,
    resolve_root,
)

LAYOUT = (
    "ROOT/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
    "ROOT/gtFine/{split}/<city>/*_gtFine_labelIds.png"
)
SPLITS = ("train", "val")
IGNORE = 255
NUM_CLASSES = 19


def train_id_lut() -> Tensor:
    """A 256-entry table from Cityscapes label ids to the 19 train ids, everything else 255.

    uint8, so that masks stay one byte through the transforms (they become int64 at the end).
    """
    lut = torch.full((256,), IGNORE, dtype=torch.uint8)
    for cls in datasets.Cityscapes.classes:
        if 0 <= cls.id < 256 and 0 <= cls.train_id < NUM_CLASSES:
            lut[cls.id] = cls.train_id
    return lut


class RandomScale(v2.ScaleJitter):
    """Resize by a factor drawn uniformly from ``scale_range``, relative to the input's own size.

    ``ScaleJitter`` scales relative to a fixed target size; the paper's augmentation scales the
    image itself, so only the choice of output size is overridden (resizing stays torchvision's,
    bilinear for images and nearest for masks). ``base_height`` first rescales every input to
    that height, for runs below full resolution.
    """

    def __init__(
        self, scale_range: tuple[float, float] = (0.5, 2.0), base_height: int | None = None
    ) -> None:
        super().__init__(target_size=(1, 1), scale_range=scale_range)
        self.base_height = base_height

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        lo, hi = self.scale_range
        scale = lo + float(torch.rand(())) * (hi - lo)
        if self.base_height:
            scale *= self.base_height / height
        return dict(size=(max(1, round(height * scale)), max(1, round(width * scale))))


def _finish() -> list[v2.Transform]:
    # ToDtype and Normalize touch the image only; the mask stays int64 train ids.
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def train_transform(crop_size: tuple[int, int], base_height: int | None = None) -> v2.Compose:
    """Random scale 0.5–2.0, random crop (padded with 0 / ignore), flip, normalization."""
    return v2.Compose(
        [
            RandomScale((0.5, 2.0), base_height),
            v2.RandomCrop(
                crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
            ),
            v2.RandomHorizontalFlip(),
            *_finish(),
        ]
    )


def eval_transform(base_height: int | None = None) -> v2.Compose:
    """Normalization only, at full resolution (or rescaled to ``base_height`` if given)."""
    resize = [v2.Resize(base_height, antialias=True)] if base_height else []
    return v2.Compose([*resize, *_finish()])


class CityscapesSplit(datasets.Cityscapes):
    """One split: ``(image (3, H, W) float, mask (H, W) int64 train ids)`` pairs."""

    def __init__(self, root: Path, split: str, transform: v2.Transform) -> None:
        super().__init__(str(root), split=split, mode="fine", target_type="semantic")
        pairs = sorted(zip(self.images, (t[0] for t in self.targets), strict=True))
        self.images = [image for image, _ in pairs]
        self.targets = [[target] for _, target in pairs]
        self.joint_transform = transform
        self.lut = train_id_lut()

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        # Read here rather than in the parent so that a corrupt file is named (DatasetError).
        image_path, mask_path = self.images[index], self.targets[index][0]
        pil_image, pil_mask = open_image(image_path), open_image(mask_path, mode=None)
        if pil_image.size != pil_mask.size:  # else the transforms fail naming no file
            raise DatasetError(
                f"cityscapes: mask {mask_path} is {_size(pil_mask.size)} but its image "
                f"{image_path} is {_size(pil_image.size)}; expected a mask of its image's size"
            )
        image = tv_tensors.Image(v2.functional.pil_to_tensor(pil_image))
        label_ids = v2.functional.pil_to_tensor(pil_mask)
        mask = tv_tensors.Mask(self.lut[label_ids[0].long()])
        image, mask = self.joint_transform(image, mask)
        return image.as_subclass(Tensor), mask.as_subclass(Tensor).long()


def _size(size: tuple[int, int]) -> str:
    """PIL's ``(width, height)`` as ``"2048×1024 (W×H)"``."""
    return f"{size[0]}×{size[1]} (W×H)"


def _check_layout(root: Path, split: str) -> None:
    """Every city folder of ``split`` has images, and every image its ``labelIds`` mask (file
    names only: no image is opened)."""
    images = root / "leftImg8bit" / split
    labels = root / "gtFine" / split
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(f"cityscapes: {folder} is missing; expected {LAYOUT}")
    cities = sorted(images.iterdir())
    if any(not p.is_dir() for p in cities):
        stray = next(p for p in cities if not p.is_dir())
        raise DatasetError(f"cityscapes: unexpected file {stray}; expected {LAYOUT}")
    if not cities:
        raise DatasetError(f"cityscapes: {images} has no city folders; expected {LAYOUT}")
    for city in cities:
        files = sorted(city.glob("*_leftImg8bit.png"))
        strays = [p.name for p in city.iterdir() if not p.name.endswith("_leftImg8bit.png")]
        if strays or not files:
            what = f"unexpected file {strays[0]}" if strays else "no *_leftImg8bit.png images"
            raise DatasetError(f"cityscapes: {city} holds {what}; expected {LAYOUT}")
        for image in files:
            stem = image.name.removesuffix("_leftImg8bit.png")
            mask = labels / city.name / f"{stem}_gtFine_labelIds.png"
            if not mask.is_file():
                raise DatasetError(f"cityscapes: {image} has no mask {mask}; expected {LAYOUT}")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(
            f"dataset 'cityscapes': option crop_size must be [height, width], got {value!r}"
        )
    return size  # type: ignore[return-value]


def _check(
    root: str | os.PathLike | None, crop_size: Any, options: dict[str, Any]
) -> tuple[Path, tuple[int, int]]:
    """The resolved root and training crop, once both splits' layout is checked (no image read)."""
    check_options("cityscapes", options, ("crop_size",))
    path = resolve_root("cityscapes", root, "CITYSCAPES_ROOT", LAYOUT)
    crop = _pair(crop_size)
    for split in SPLITS:
        _check_layout(path, split)
    return path, crop


class Cityscapes(DataSource):
    """Cityscapes from ``root`` or ``CITYSCAPES_ROOT``.

    Options: ``crop_size`` ([height, width] of the training crop, default [512, 1024]: the
    paper's 1024×512). ``image_size``, if given, first rescales both splits to that height
    (for cheap runs); by default training crops are taken from full-resolution images and
    evaluation runs at full resolution (1024×2048).
    """

    task = "segmentation"  #: declared before any data is read: validation checks it

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        crop_size: int | Sequence[int] = (512, 1024),
        **options: Any,
    ) -> None:
        self.root, self.crop_size = _check(root, crop_size, options)
        self.base_height = int(image_size) if image_size else None
        self.info = DatasetInfo(
            task="segmentation",
            num_classes=NUM_CLASSES,
            in_channels=3,
            ignore_index=IGNORE,
            train_split="train",
            eval_split="val",
        )

    @classmethod
    def check(
        cls,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        crop_size: int | Sequence[int] = (512, 1024),
        **options: Any,
    ) -> None:
        """Check the options and both splits' layout, reading no image
        (`deqbench.data.check_source`)."""
        _check(root, crop_size, options)

    def dataset(self, split: str) -> Dataset:
        check_split("cityscapes", split, SPLITS)
        if split == "train":
            transform = train_transform(self.crop_size, self.base_height)
        else:
            transform = eval_transform(self.base_height)
        return CityscapesSplit(self.root, split, transform)
