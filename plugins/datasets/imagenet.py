"""ImageNet in the standard class-folder layout, with the paper's transforms."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from deqbench.data import DatasetError, DatasetInfo, DataSource
from deqbench_plugins.datasets.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_options,
    check_split,
    open_image,
    require_dir,
    resolve_root,
)

LAYOUT = (
    "ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG "
    "(the validation images sorted into the same class folders)"
)
SPLITS = ("train", "val")


def train_transform(image_size: int = 224) -> v2.Compose:
    """Random-resized crop + horizontal flip + normalization, on a PIL image."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int = 224) -> v2.Compose:
    """Resize to ``image_size · 256/224`` (256 for 224) + center crop + normalization."""
    return v2.Compose(
        [
            v2.Resize(round(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageNet(DataSource):
    """ImageNet (or any class-folder tree) from ``root`` or ``IMAGENET_ROOT``.

    The class count is the number of class folders, so a subset (e.g. 100 classes) works too.
    Both splits are scanned at construction: a missing split, an empty class folder or classes
    that differ between the splits is reported before anything trains.
    """

    task = "classification"  #: declared before any data is read: validation checks it

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        **options: Any,
    ) -> None:
        check_options("imagenet", options, ())
        self.root = resolve_root("imagenet", root, "IMAGENET_ROOT", LAYOUT)
        self.image_size = int(image_size or 224)
        self._folders = {split: self._scan(split) for split in SPLITS}
        train, val = self._folders["train"], self._folders["val"]
        if train.classes != val.classes:
            only = sorted(set(train.classes) ^ set(val.classes))
            raise DatasetError(
                f"imagenet root {self.root}: train/ and val/ have different class folders "
                f"(e.g. {', '.join(only[:3])}); expected {LAYOUT}"
            )
        self.classes: list[str] = train.classes
        self.info = DatasetInfo(
            task="classification",
            num_classes=len(self.classes),
            in_channels=3,
            ignore_index=None,
            train_split="train",
            eval_split="val",
        )

    def _scan(self, split: str) -> ImageFolder:
        folder = require_dir("imagenet", self.root / split, LAYOUT)
        transform = train_transform if split == "train" else eval_transform
        try:
            return ImageFolder(folder, transform=transform(self.image_size), loader=open_image)
        except FileNotFoundError as exc:  # no class folders, or a class folder without images
            raise DatasetError(f"imagenet: {folder}: {exc}; expected {LAYOUT}") from None

    def dataset(self, split: str) -> Dataset:
        check_split("imagenet", split, SPLITS)
        return self._folders[split]
