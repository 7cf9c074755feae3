"""Generated images with learnable labels, for smoke runs and speed measurements.

Classification: each class has a fixed smooth random pattern; a sample is its class's pattern
plus Gaussian noise. Segmentation: a background plus one to three rectangles and discs, each
of a random foreground class; every pixel shows its class's colour plus noise, and the mask is
the class map. Both are generated once per split, seeded, and held in memory.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from deqbench.data import DatasetInfo, DataSource
from deqbench.errors import ConfigError
from deqbench_plugins.datasets.common import TensorSplit, check_choice, check_options, check_split

TASKS = ("classification", "segmentation")
SPLITS = ("train", "val")
OPTIONS = ("task", "num_classes", "length", "eval_length", "channels", "noise", "seed")
IGNORE = 255


def class_patterns(num_classes: int, channels: int, size: int, gen: torch.Generator) -> Tensor:
    """``(K, C, size, size)`` smooth random patterns of unit standard deviation."""
    coarse = torch.randn(num_classes, channels, 4, 4, generator=gen)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return patterns / patterns.flatten(1).std(dim=1).view(-1, 1, 1, 1)


def classification(
    patterns: Tensor, length: int, noise: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Balanced labels in random order, each image its class's pattern plus noise."""
    num_classes = len(patterns)
    labels = (torch.arange(length) % num_classes)[torch.randperm(length, generator=gen)]
    images = patterns[labels] + noise * torch.randn(length, *patterns.shape[1:], generator=gen)
    return images, labels


def class_colours(num_classes: int, channels: int, gen: torch.Generator) -> Tensor:
    """``(K, C)`` colours: per channel, a random permutation of K levels evenly spread in
    [−1, 1], so any two classes differ by at least 2/(K−1) in every channel."""
    levels = torch.linspace(-1.0, 1.0, num_classes)
    perms = [torch.randperm(num_classes, generator=gen) for _ in range(channels)]
    return torch.stack([levels[p] for p in perms], dim=1)


def shape_masks(length: int, size: int, num_classes: int, gen: torch.Generator) -> Tensor:
    """``(N, size, size)`` int64 class maps: background 0 and 1–3 rectangles or discs."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = grid.view(-1, 1), grid.view(1, -1)
    masks = torch.zeros(length, size, size, dtype=torch.int64)
    counts = torch.randint(1, 4, (length,), generator=gen)
    for i in range(length):
        for _ in range(int(counts[i])):
            cls = int(torch.randint(1, num_classes, (), generator=gen))
            cy, cx = (torch.rand(2, generator=gen) * size).tolist()
            half = float(size * (0.1 + 0.2 * torch.rand((), generator=gen)))
            if torch.rand((), generator=gen) < 0.5:
                inside = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
            else:
                inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= half**2
            masks[i][inside] = cls
    return masks


def segmentation(
    colours: Tensor, length: int, size: int, noise: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Images whose pixels show their class's colour (``colours``: ``(K, C)``) plus noise."""
    masks = shape_masks(length, size, len(colours), gen)
    images = colours[masks].permute(0, 3, 1, 2)
    images = images + noise * torch.randn(images.shape, generator=gen)
    return images.contiguous(), masks


def _positive_int(option: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"dataset 'synthetic': option {option} must be an integer >= {minimum}, got {value!r}"
        )
    return value


class Synthetic(DataSource):
    """Synthetic classification or segmentation data (``root`` is ignored).

    Options: ``task`` ("classification" | "segmentation"), ``num_classes`` (default 10, or 4
    for segmentation: background + 3), ``length`` (train samples, default 1024),
    ``eval_length`` (default length // 4), ``channels`` (3), ``noise`` (std, 0.5), ``seed`` (0).
    Memory: ``length · channels · image_size²`` floats per split.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        image_size: int | None = None,
        task: str = "classification",
        num_classes: int | None = None,
        length: int = 1024,
        eval_length: int | None = None,
        channels: int = 3,
        noise: float = 0.5,
        seed: int = 0,
        **options: Any,
    ) -> None:
        check_options("synthetic", options, OPTIONS)
        check_choice("synthetic", "task", task, TASKS)
        self.task = task
        default_classes = 10 if task == "classification" else 4
        self.num_classes = _positive_int("num_classes", num_classes or default_classes, 2)
        self.image_size = _positive_int("image_size", int(image_size or 32), 4)
        self.lengths = {
            "train": _positive_int("length", length),
            "val": _positive_int("eval_length", eval_length or max(1, length // 4)),
        }
        self.channels = _positive_int("channels", channels)
        if isinstance(noise, bool) or not isinstance(noise, int | float) or noise < 0:
            raise ConfigError(f"dataset 'synthetic': option noise must be >= 0, got {noise!r}")
        self.noise = float(noise)
        self.seed = _positive_int("seed", seed, 0)
        self._splits: dict[str, TensorSplit] = {}
        segment = task == "segmentation"
        self.info = DatasetInfo(
            task=task,
            num_classes=self.num_classes,
            in_channels=self.channels,
            ignore_index=IGNORE if segment else None,
            train_split="train",
            eval_split="val",
        )

    @classmethod
    def check(
        cls, *, root: str | os.PathLike | None = None, image_size: int | None = None, **options: Any
    ) -> None:
        """Check the options (`deqbench.data.check_source`). Construction only checks them:
        the splits are generated on first use, so this builds and drops an empty source."""
        cls(root=root, image_size=image_size, **options)

    def _generate(self, split: str) -> TensorSplit:
        # Distinct streams per seed: 3·seed draws the classes' looks, 3·seed + 1 + i split i.
        looks = torch.Generator().manual_seed(3 * self.seed)
        gen = torch.Generator().manual_seed(3 * self.seed + 1 + SPLITS.index(split))
        n, size = self.lengths[split], self.image_size
        if self.task == "classification":
            patterns = class_patterns(self.num_classes, self.channels, size, looks)
            images, targets = classification(patterns, n, self.noise, gen)
        else:
            colours = class_colours(self.num_classes, self.channels, looks)
            images, targets = segmentation(colours, n, size, self.noise, gen)
        return TensorSplit(images, targets)

    def dataset(self, split: str) -> Dataset:
        check_split("synthetic", split, SPLITS)
        if split not in self._splits:
            self._splits[split] = self._generate(split)
        return self._splits[split]
