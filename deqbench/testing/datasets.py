"""Tiny datasets in the real on-disk formats, generated for tests (nothing can be downloaded).

- `make_imagenet_folder`: ``ROOT/{train,val}/<wnid>/*.JPEG``, each class one solid colour.
- `make_cifar10`: ``ROOT/cifar-10-batches-py/`` python-pickle batches as the official ones.
- `make_cityscapes`: ``ROOT/leftImg8bit/{split}/<city>/*_leftImg8bit.png`` and
  ``ROOT/gtFine/{split}/<city>/*_gtFine_labelIds.png``; each pixel's colour is a function of
  its label id (`label_colour`), so a test can check that image and mask stay aligned.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: Cityscapes label ids the fixture draws from: unlabeled (0), ego vehicle (1), road (7),
#: sidewalk (8), building (11), sky (23), person (24), car (26), license plate (-1 → absent).
CITYSCAPES_IDS = (0, 1, 7, 8, 11, 23, 24, 26)


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct solid RGB colour per class index (the fixture's label is visible in it)."""
    rng = np.random.default_rng(1000 + index)
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def make_imagenet_folder(
    root: str | os.PathLike,
    classes: int = 3,
    per_class: int = 4,
    size: tuple[int, int] = (48, 64),
    splits: Sequence[str] = ("train", "val"),
) -> list[str]:
    """Write ``per_class`` JPEGs of ``size`` (height, width) per class and split; return the
    class folder names (sorted, so index = label)."""
    root = Path(root)
    names = [f"n{i:08d}" for i in range(classes)]
    height, width = size
    for split in splits:
        for index, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.empty((height, width, 3), dtype=np.uint8)
            pixels[:] = class_colour(index)
            for j in range(per_class):
                Image.fromarray(pixels).save(folder / f"{name}_{j}.JPEG", quality=95)
    return names


def make_cifar10(
    root: str | os.PathLike, n: int = 20, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``cifar-10-batches-py`` with ``n`` random images in each of the five training
    batches and the test batch. Returns ``{"train"|"test": (uint8 (N, 3, 32, 32), labels)}``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for number, name in enumerate(names, start=1):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {number} of 5"
        batch = {
            b"batch_label": label.encode(),
            b"labels": [int(y) for y in labels],
            b"data": data,
            b"filenames": [f"img_{number}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        split = "test" if name == "test_batch" else "train"
        written[split].append((data.reshape(n, 3, 32, 32), labels))
    meta = {
        b"num_cases_per_batch": n,
        b"label_names": [c.encode() for c in CIFAR_CLASSES],
        b"num_vis": 3 * 32 * 32,
    }
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return {
        split: (np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts]))
        for split, parts in written.items()
    }


def label_colour(label_ids: np.ndarray) -> np.ndarray:
    """The fixture's RGB colour of each Cityscapes label id: ``(..., 3)`` uint8."""
    ids = np.asarray(label_ids, dtype=np.int64)
    return np.stack([(ids * 37) % 256, (ids * 91 + 40) % 256, (255 - ids * 9) % 256], -1).astype(
        np.uint8
    )


def make_cityscapes(
    root: str | os.PathLike,
    n: int = 2,
    size: tuple[int, int] = (32, 64),
    cities: Sequence[str] = ("aachen",),
    splits: Sequence[str] = ("train", "val"),
    label_ids: np.ndarray | None = None,
    seed: int = 0,
) -> list[tuple[Path, Path]]:
    """Write ``n`` image/labelIds pairs of ``size`` (height, width) per city and split.

    ``label_ids`` (an ``(H, W)`` uint8 map) is used for every pair if given; otherwise each
    mask is a blocky random map over `CITYSCAPES_IDS`. Returns the (image, mask) paths.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    pairs = []
    for split in splits:
        for city in cities:
            images = root / "leftImg8bit" / split / city
            masks = root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            masks.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                if label_ids is None:
                    blocks = rng.choice(CITYSCAPES_IDS, size=(-(-height // 8), -(-width // 8)))
                    ids = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:height, :width]
                else:
                    ids = label_ids
                ids = np.asarray(ids, dtype=np.uint8)
                stem = f"{city}_{j:06d}_000019"
                image_path = images / f"{stem}_leftImg8bit.png"
                mask_path = masks / f"{stem}_gtFine_labelIds.png"
                Image.fromarray(label_colour(ids)).save(image_path)
                Image.fromarray(ids).save(mask_path)  # 2-D uint8: mode "L", as the real masks
                pairs.append((image_path, mask_path))
    return pairs


def corrupt_file(path: str | os.PathLike) -> Path:
    """Overwrite ``path`` with bytes no image or pickle reader accepts; return it."""
    path = Path(path)
    path.write_bytes(b"\x00not an image or a pickle\x00" * 4)
    return path
