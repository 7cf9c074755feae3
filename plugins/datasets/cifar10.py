"""CIFAR-10 from the official python-pickle batches, with the optional crop + flip augmentation.

torchvision's ``CIFAR10`` verifies the official archive's MD5 checksums on every construction,
so it rejects any other copy in the same format (a generated test fixture, a re-pickled or
trimmed copy) with "Dataset not found or corrupted". This module therefore reads the real
format itself (a dict per batch with ``data``: N×3072 uint8 rows, channel-major, and
``labels``) and leaves the transforms to torchvision.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from deqbench.data import DatasetError, DatasetInfo, DataSource
from deqbench.errors import ConfigError
from deqbench_plugins.datasets.common import check_options, check_split, resolve_root

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"
LAYOUT = (
    f"ROOT/{FOLDER}/ with data_batch_1..5, test_batch and batches.meta "
    "(the python version of CIFAR-10)"
)
SPLITS = ("train", "test")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _unpickle(path: Path) -> dict[str, Any]:
    """One batch file, keys as str (the official files are Python 2 pickles with bytes keys)."""
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    except Exception as exc:  # any unpickling failure means the file is not a CIFAR batch
        raise DatasetError(f"cifar10: corrupt batch file {path}: {exc}") from exc


def _read_batches(folder: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = _unpickle(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            target = np.asarray(batch["labels"], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(target) != len(data):
                raise ValueError(f"data {data.shape}, {len(target)} labels")
            if len(target) and not (target.min() >= 0 and target.max() < 10):
                raise ValueError(f"labels outside 0..9 ({target.min()}..{target.max()})")
        except (KeyError, ValueError, TypeError) as exc:
            raise DatasetError(
                f"cifar10: {path} is not a CIFAR-10 batch ({exc}); expected a dict with "
                "'data' (N×3072 uint8) and 'labels' (N ints in 0..9)"
            ) from None
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(target))
    return torch.cat(images), torch.cat(labels)


def _check(root: str | os.PathLike | None, augment: Any, options: dict[str, Any]) -> Path:
    """The batches folder, once the options are valid and every batch file is there (unread)."""
    check_options("cifar10", options, ("augment",))
    base = resolve_root("cifar10", root, "CIFAR10_ROOT", LAYOUT)
    folder = base if (base / TEST_BATCHES[0]).exists() else base / FOLDER
    if not folder.is_dir():
        raise DatasetError(f"cifar10: {folder} is missing; expected {LAYOUT}")
    if not isinstance(augment, bool):
        raise ConfigError(
            f"dataset 'cifar10': option augment must be true or false, got {augment!r}"
        )
    for name in (META, *TRAIN_BATCHES, *TEST_BATCHES):
        if not (folder / name).is_file():
            raise DatasetError(f"cifar10: {folder / name} is missing; expected {LAYOUT}")
    return folder


def transform(augment: bool, image_size: int = 32) -> v2.Compose:
    """Normalization; with ``augment``, random crop with 4 pixels of padding and a flip first."""
    steps: list[v2.Transform] = []
    if augment:
        steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    if image_size != 32:
        steps.append(v2.Resize(image_size, antialias=True))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(steps)


class CifarSplit(Dataset):
    """A CIFAR split held in memory as uint8, transformed per sample."""

    def __init__(self, images: Tensor, labels: Tensor, transform: v2.Transform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.transform(tv_tensors.Image(self.images[index]))
        return image.as_subclass(Tensor), int(self.labels[index])


class Cifar10(DataSource):
    """CIFAR-10 from ``root`` or ``CIFAR10_ROOT`` (either the folder holding
    ``cifar-10-batches-py`` or that folder itself). Options: ``augment`` (default False)."""

    task = "classification"  #: declared before any data is read: validation checks it

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        augment: bool = False,
        **options: Any,
    ) -> None:
        self.root = folder = _check(root, augment, options)
        self.augment = augment
        self.image_size = int(image_size or 32)
        meta = _unpickle(folder / META)
        names = meta.get("label_names")
        if not isinstance(names, list) or len(names) != 10:
            raise DatasetError(f"cifar10: {folder / META} does not name 10 classes in label_names")
        self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        self._data = {
            "train": _read_batches(folder, TRAIN_BATCHES),
            "test": _read_batches(folder, TEST_BATCHES),
        }
        self.info = DatasetInfo(
            task="classification",
            num_classes=10,
            in_channels=3,
            ignore_index=None,
            train_split="train",
            eval_split="test",
        )

    @classmethod
    def check(
        cls,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        augment: bool = False,
        **options: Any,
    ) -> None:
        """Check the options and that every batch file is there, unpickling none
        (`deqbench.data.check_source`)."""
        _check(root, augment, options)

    def dataset(self, split: str) -> Dataset:
        check_split("cifar10", split, SPLITS)
        images, labels = self._data[split]
        augment = self.augment and split == "train"
        return CifarSplit(images, labels, transform(augment, self.image_size))
