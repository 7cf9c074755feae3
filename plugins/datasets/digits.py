"""The 1,797 handwritten 8×8 digits bundled with scikit-learn: real data with no download.

A fixed, seeded, stratified 80/20 train/test split; images upsampled once (bilinear) to
``image_size`` and normalized with the training split's mean and standard deviation, then held
in memory, so a loader only indexes tensors.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from deqbench.data import DatasetInfo, DataSource
from deqbench.errors import ConfigError
from deqbench_plugins.datasets.common import TensorSplit, check_options, check_split

SPLITS = ("train", "test")
TEST_FRACTION = 0.2


def _check(image_size: int | None, options: dict[str, Any]) -> int:
    """The image size, once it and the options are valid."""
    check_options("digits", options, ("seed",))
    size = int(image_size or 32)
    if size < 8:
        raise ConfigError(f"dataset 'digits': image_size must be >= 8, got {size}")
    return size


class Digits(DataSource):
    """scikit-learn's digits (10 classes, 1 channel). Options: ``seed`` of the split (default 0).

    ``root`` is accepted and ignored: the data ships with scikit-learn.
    """

    task = "classification"  #: declared before any data is read: validation checks it

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        seed: int = 0,
        **options: Any,
    ) -> None:
        self.image_size = _check(image_size, options)
        images, labels = load_digits(return_X_y=True)
        index = np.arange(len(labels))
        train_idx, test_idx = train_test_split(
            index, test_size=TEST_FRACTION, stratify=labels, random_state=seed
        )
        # The digits are integers 0..16; upsample once, then normalize with train statistics.
        pixels = torch.from_numpy(images.astype(np.float32)).view(-1, 1, 8, 8) / 16.0
        if self.image_size != 8:
            size = (self.image_size, self.image_size)
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        train = pixels[torch.from_numpy(train_idx)]
        mean, std = train.mean(), train.std()
        pixels = (pixels - mean) / std
        targets = torch.from_numpy(labels.astype(np.int64))
        self.indices = {"train": train_idx, "test": test_idx}
        self._splits = {
            split: TensorSplit(pixels[torch.from_numpy(idx)].contiguous(), targets[idx])
            for split, idx in self.indices.items()
        }
        self.info = DatasetInfo(
            task="classification",
            num_classes=10,
            in_channels=1,
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
        seed: int = 0,
        **options: Any,
    ) -> None:
        """Check the options, loading nothing (`deqbench.data.check_source`)."""
        _check(image_size, options)

    def dataset(self, split: str) -> Dataset:
        check_split("digits", split, SPLITS)
        return self._splits[split]
