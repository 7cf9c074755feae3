"""What the dataset plugins share: data roots, option checks, image opening, in-memory splits."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from deqbench.data import DatasetError
from deqbench.errors import ConfigError, did_you_mean

#: The ImageNet channel statistics, also used for Cityscapes (models start from ImageNet habits).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_root(name: str, root: str | os.PathLike | None, env_var: str, layout: str) -> Path:
    """The data root: ``root`` if given (an empty string counts as not given), else ``env_var``.

    Raises `DatasetError` naming the path and the expected ``layout`` when there is none or it is
    not a directory.
    """
    given = os.fspath(root) if root is not None else ""
    if not given:
        given = os.environ.get(env_var, "")
    if not given:
        raise DatasetError(
            f"{name}: no data root; set dataset.root or {env_var} to a folder laid out as {layout}"
        )
    path = Path(given).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{name} root {path} is not a directory; expected {layout}")
    return path


def require_dir(name: str, path: Path, layout: str) -> Path:
    """``path`` itself, if it is a directory; else a `DatasetError` naming it and the layout."""
    if not path.is_dir():
        raise DatasetError(f"{name}: {path} is missing; expected {layout}")
    return path


def check_options(name: str, unknown: Mapping[str, Any], known: Iterable[str]) -> None:
    """Reject options a dataset does not take, with "did you mean"."""
    for key in unknown:
        raise ConfigError(f"dataset {name!r} has no option {key!r}{did_you_mean(key, known)}")


def check_choice(name: str, option: str, value: str, choices: Iterable[str]) -> None:
    """Reject an option value outside ``choices``, with "did you mean"."""
    choices = list(choices)
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ConfigError(f"dataset {name!r}: option {option}={value!r} is not valid{hint}")


def check_split(name: str, split: str, splits: Iterable[str]) -> None:
    """Reject an unknown split name, with "did you mean"."""
    splits = list(splits)
    if split not in splits:
        raise DatasetError(f"dataset {name!r} has no split {split!r}{did_you_mean(split, splits)}")


def open_image(path: str | os.PathLike, mode: str | None = "RGB") -> Image.Image:
    """Open and decode an image file, converted to ``mode`` (None keeps the file's mode).

    A file PIL cannot read gives a `DatasetError` naming the file, so a corrupt image in an
    otherwise good root surfaces as one line instead of a traceback from inside PIL.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now, inside the try: PIL decodes lazily
            return image.convert(mode) if mode is not None else image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc)
        if os.fspath(path) in reason:  # PIL's own message already names the file
            reason = "not a readable image" + (f" ({type(exc).__name__})")
        raise DatasetError(f"corrupt image {os.fspath(path)}: {reason}") from exc


class TensorSplit(Dataset):
    """A split held in memory: ``(image, int label)`` or ``(image, mask)`` pairs.

    Used for the small bundled and generated datasets, so that a loader adds nothing beyond
    indexing (no decoding, no per-sample transform).
    """

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets
        self._int_labels = targets.dim() == 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        target = self.targets[index]
        return self.images[index], int(target) if self._int_labels else target

    def class_counts(self, num_classes: int) -> Tensor:
        """Samples per class (classification splits)."""
        return torch.bincount(self.targets, minlength=num_classes)
