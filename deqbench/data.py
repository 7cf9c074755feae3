"""What every dataset declares to the training runner, and the loaders the runner builds.

A dataset plugin registers a factory (``register_datasets``) called with keyword arguments:

    factory(*, root=None, image_size=None, **options) -> DataSource

The factory checks its root at once: a missing or malformed one raises `DatasetError` naming
the path and the layout expected, before anything trains.

A factory may also offer a cheap check of its root and options, as a ``check`` attribute (a
classmethod or staticmethod of a `DataSource` class, or a function attribute):

    factory.check(*, root=None, image_size=None, **options) -> None

It raises what the factory would for a missing or malformed root, layout or option (the same
`DatasetError` or `deqbench.errors.ConfigError`, same message) without reading the data: no
image scans, no unpickling, no tensors. What only the data shows (a corrupt file, an empty
class folder) is still found when the source is built. With it a suite can check each source
in its parent process and build it only where a run trains (`check_source`); a factory
without ``check`` is built to be checked, and `check_source` returns that source to keep.

A factory may declare its task before any data is read, as a ``task`` attribute (a class
attribute ``task = "segmentation"``) or a ``task`` option; model factories and heads declare
theirs the same way. Validation then refuses a model of the other task
(`deqbench.suite.train.declared_task`); undeclared, the mismatch is found when the run starts.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deqbench.errors import DeqbenchError


class DatasetError(DeqbenchError):
    """A missing or malformed data root, or a corrupt file in it (the message names it)."""

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker's error is re-raised in the parent as DatasetError("Caught
        # DatasetError in DataLoader worker process N.\nOriginal Traceback ...\n...: <message>").
        # Keep it one line: the original message, then where it was caught.
        head, _, rest = message.partition("\nOriginal Traceback")
        if rest and head.startswith("Caught "):
            last = rest.rstrip().rsplit("\n", 1)[-1]
            where = head.removeprefix("Caught ").removeprefix(type(self).__name__).strip(" .")
            message = f"{last.partition(': ')[2] or last} ({where})"
        super().__init__(message)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's declaration. Classification samples are ``(image, int label)``;
    segmentation samples are ``(image, (H, W) int64 mask)`` with ``ignore_index`` unlabelled."""

    task: str  #: "classification" or "segmentation"
    num_classes: int
    in_channels: int = 3
    ignore_index: int | None = None
    train_split: str = "train"
    eval_split: str = "val"

    @property
    def splits(self) -> tuple[str, str]:
        return (self.train_split, self.eval_split)


class DataSource(abc.ABC):
    """A configured dataset: its `DatasetInfo` and its splits as torch datasets."""

    info: DatasetInfo

    @abc.abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The named split; the train split carries the training augmentation, the eval split
        the deterministic evaluation transform."""


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and `random` in a loader worker from its torch seed (deterministic per run)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    workers: int = 0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A `DataLoader` with deterministic shuffling and worker seeds, persistent workers and
    pinned memory on CUDA. A ``sampler`` (e.g. a `DistributedSampler`) replaces shuffling."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
        worker_init_fn=seed_worker,
        generator=gen,
        drop_last=drop_last,
    )


def check_source(
    factory: Any, *, root: Any, image_size: int | None, options: Mapping[str, Any]
) -> DataSource | None:
    """Check a dataset's root and options: ``factory.check(...)`` if the factory has one (None),
    else the source built (returned so that the caller need not build it again).

    Raises what the factory raises for a missing or malformed root or a bad option.
    """
    check = getattr(factory, "check", None)
    if callable(check):
        check(root=root, image_size=image_size, **options)
        return None
    return factory(root=root, image_size=image_size, **options)
