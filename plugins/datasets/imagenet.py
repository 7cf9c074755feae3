"""ImageNet in the standard class-folder layout, with the paper's transforms."""

from __future__ import annotations

import os
from pathlib import Path
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


def _check(root: str | os.PathLike | None, options: dict[str, Any]) -> tuple[Path, list[str]]:
    """The resolved root and its class folders, the same in both splits.

    Lists directory names only (the split folders'), so it costs the same however many images.
    """
    check_options("imagenet", options, ())
    root = resolve_root("imagenet", root, "IMAGENET_ROOT", LAYOUT)
    classes = {}
    for split in SPLITS:
        folder = require_dir("imagenet", root / split, LAYOUT)
        # ImageFolder's own rule: every subdirectory is a class, sorted by name.
        classes[split] = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        if not classes[split]:
            raise DatasetError(f"imagenet: {folder} has no class folders; expected {LAYOUT}")
    train, val = classes["train"], classes["val"]
    if train != val:
        only = sorted(set(train) ^ set(val))
        raise DatasetError(
            f"imagenet root {root}: train/ and val/ have different class folders "
            f"(e.g. {', '.join(only[:3])}); expected {LAYOUT}"
        )
    return root, train


class ImageNet(DataSource):
    """ImageNet (or any class-folder tree) from ``root`` or ``IMAGENET_ROOT``.

    The class count is the number of class folders, so a subset (e.g. 100 classes) works too.
    Both splits are scanned at construction: a missing split, an empty class folder or classes
    that differ between the splits is reported before anything trains. `check` reports all but
    the empty class folder without listing any image.
    """

    task = "classification"  #: declared before any data is read: validation checks it

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        **options: Any,
    ) -> None:
        self.root, self.classes = _check(root, options)
        self.image_size = int(image_size or 224)
        self._folders = {split: self._scan(split) for split in SPLITS}
        self.info = DatasetInfo(
            task="classification",
            num_classes=len(self.classes),
            in_channels=3,
            ignore_index=None,
            train_split="train",
            eval_split="val",
        )

    @classmethod
    def check(
        cls, *, root: str | os.PathLike | None = None, image_size: int | None = None, **options: Any
    ) -> None:
        """Check the root, its splits and their class folders, reading no image
        (`deqbench.data.check_source`)."""
        _check(root, options)

    def _scan(self, split: str) -> ImageFolder:
        folder = self.root / split
        transform = train_transform if split == "train" else eval_transform
        try:
            return ImageFolder(folder, transform=transform(self.image_size), loader=open_image)
        except FileNotFoundError as exc:  # a class folder without images
            raise DatasetError(f"imagenet: {folder}: {exc}; expected {LAYOUT}") from None

    def dataset(self, split: str) -> Dataset:
        check_split("imagenet", split, SPLITS)
        return self._folders[split]
