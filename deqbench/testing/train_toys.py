"""Tiny models and a tiny dataset for testing training suites in seconds, as an in-process
plugin: ``deqbench.plugins.reset_registry(("train-toys", TrainToys()))``.

- ``tiny-deq``: flatten → a tanh DEQ cell of width ``dim`` → linear; ``set_unrolled`` runs
  ``unrolled_depth`` weight-tied steps instead. It records each training forward's mode in
  ``modes`` (not the forwards of a gradient check, `deqbench.runs.train.grad_check`);
  ``nan_at_step`` makes
  the logits NaN from that training forward on, and ``fail_at_step`` raises there (to test the
  runner's ``diverged`` and ``error`` rows). From that training forward on, ``oom_at_step``
  raises a simulated ``torch.OutOfMemoryError``, ``hang_at_step`` blocks for ever where no
  Python signal handler can run (as a stuck C++ kernel does) and ``crash_at_step`` kills its own
  process with SIGSEGV (to test ``oom``, ``timeout`` and ``crashed`` rows); ``delay_s`` sleeps
  that long in every training forward; ``input_noise`` adds Gaussian noise of that scale to
  training inputs from the global torch RNG (so a resumed run's figures depend on its RNG state
  being restored).
- ``tiny-mlp``: an explicit two-layer baseline; ``tiny-seg``: an explicit segmenter.
- ``blobs``: 3 Gaussian classes as ``(1, size, size)`` images, fixed by ``seed``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from deqbench.cell import Cell
from deqbench.data import DatasetInfo, DataSource
from deqbench.hookspecs import hookimpl
from deqbench.models import DEQSettings, Model
from deqbench.state import State


class TinyCell(Cell):
    """``z ↦ tanh(W z + U x)`` with ‖W‖₂ = 0.5 at initialisation (a contraction)."""

    def __init__(self, dim: int, input_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.injection = nn.Linear(input_dim, dim)
        with torch.no_grad():
            self.linear.weight.mul_(0.5 / torch.linalg.matrix_norm(self.linear.weight, ord=2))

    def inject(self, x: Tensor) -> Tensor:
        return self.injection(x.flatten(1))

    def init_state(self, injection: Tensor) -> State:
        return (torch.zeros_like(injection),)

    def forward(self, z: State, injection: Tensor) -> State:
        return (torch.tanh(self.linear(z[0]) + injection),)


class TinyDEQ(Model):
    """A one-cell DEQ classifier with an unrolled warm-up mode."""

    def __init__(
        self,
        num_classes: int,
        input_dim: int,
        deq: DEQSettings,
        dim: int = 8,
        unrolled_depth: int = 3,
        nan_at_step: int | None = None,
        fail_at_step: int | None = None,
        oom_at_step: int | None = None,
        hang_at_step: int | None = None,
        crash_at_step: int | None = None,
        delay_s: float = 0.0,
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell = TinyCell(dim, input_dim)
        self.deq = deq.build(self.cell, f_max_iter=30, b_max_iter=30)
        self.head = nn.Linear(dim, num_classes)
        self.unrolled_depth = unrolled_depth
        self.nan_at_step, self.fail_at_step = nan_at_step, fail_at_step
        self.oom_at_step, self.hang_at_step = oom_at_step, hang_at_step
        self.crash_at_step, self.delay_s = crash_at_step, delay_s
        self.input_noise = input_noise
        self._unrolled = False
        self.modes: list[str] = []  #: the mode of each training forward, in order

    @property
    def unrolled(self) -> bool:
        return self._unrolled

    def set_unrolled(self, unrolled: bool) -> None:
        self._unrolled = unrolled

    def forward(self, x: Tensor) -> Tensor:
        step = len(self.modes)
        if self.training and not self.deq.overriding:  # not the harness's gradient checks
            self.modes.append("unrolled" if self._unrolled else "equilibrium")
            if self.fail_at_step is not None and step >= self.fail_at_step:
                raise RuntimeError(f"tiny-deq fails at step {step} as asked")
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.oom_at_step is not None and step >= self.oom_at_step:
                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by tiny-deq)"
                )
            if self.hang_at_step is not None and step >= self.hang_at_step:
                _hang()
            if self.crash_at_step is not None and step >= self.crash_at_step:
                os.kill(os.getpid(), signal.SIGSEGV)
        if self.training and self.input_noise:  # from the global RNG, as dropout draws
            x = x + self.input_noise * torch.randn_like(x)
        if self._unrolled and self.training:
            injection = self.cell.inject(x)
            z = self.cell.init_state(injection)
            for _ in range(self.unrolled_depth):
                z = self.cell(z, injection)
        else:
            z = self.deq(x)
        logits = self.head_logits(z, x)
        if self.training and self.nan_at_step is not None and step >= self.nan_at_step:
            logits = logits * float("nan")
        return logits

    def head_logits(self, state: State, x: Tensor) -> Tensor:
        return self.head(state[0])


def _hang() -> None:
    """Block for ever. On Linux: lock a plain pthread mutex twice, a deadlock inside C that no
    signal handler interrupts (only SIGKILL or a default-action signal ends it)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None)
        mutex = ctypes.create_string_buffer(128)  # all zeros: glibc's PTHREAD_MUTEX_INITIALIZER
        libc.pthread_mutex_lock(mutex)
        libc.pthread_mutex_lock(mutex)
    while True:  # elsewhere, and should the deadlock ever return
        time.sleep(3600)


def tiny_deq(
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | None = None,
    head: str | None = None,
    head_options: dict | None = None,
    deq: DEQSettings | None = None,
    **options: Any,
) -> TinyDEQ:
    size = image_size or 4
    return TinyDEQ(num_classes, in_channels * size * size, deq or DEQSettings(), **options)


class TinyMLP(Model):
    """An explicit baseline: flatten → linear → ReLU → linear."""

    def __init__(self, num_classes: int, input_dim: int, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(input_dim, width), nn.ReLU(), nn.Linear(width, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def tiny_mlp(
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | None = None,
    head: str | None = None,
    head_options: dict | None = None,
    deq: DEQSettings | None = None,
    width: int = 8,
) -> TinyMLP:
    size = image_size or 4
    return TinyMLP(num_classes, in_channels * size * size, width)


class TinySeg(Model):
    """An explicit segmenter whose logits come at half the input size (the loss upsamples)."""

    task = "segmentation"

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = nn.Conv2d(in_channels, num_classes, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def tiny_seg(
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | None = None,
    head: str | None = None,
    head_options: dict | None = None,
    deq: DEQSettings | None = None,
) -> TinySeg:
    return TinySeg(num_classes, in_channels)


class Blobs(DataSource):
    """Three well-separated Gaussian classes as one-channel images."""

    def __init__(self, size: int = 4, train: int = 48, eval: int = 24, seed: int = 0) -> None:
        self.info = DatasetInfo(task="classification", num_classes=3, in_channels=1)
        gen = torch.Generator().manual_seed(seed)
        means = 2 * torch.randn(3, 1, size, size, generator=gen)
        self._splits = {}
        for split, n in (("train", train), ("val", eval)):
            y = torch.arange(n) % 3
            x = means[y] + 0.5 * torch.randn(n, 1, size, size, generator=gen)
            self._splits[split] = TensorDataset(x, y)

    def dataset(self, split: str) -> TensorDataset:
        return self._splits[split]


def blobs(*, root: str | None = None, image_size: int | None = None, **options: Any) -> Blobs:
    return Blobs(size=image_size or 4, **options)


class TrainToys:
    """The in-process plugin registering ``tiny-deq``, ``tiny-mlp`` and ``blobs``."""

    @hookimpl
    def register_models(self, register):
        register("tiny-deq", tiny_deq, description="one-cell tanh DEQ for tests")
        register("tiny-mlp", tiny_mlp, description="explicit two-layer MLP for tests")
        register("tiny-seg", tiny_seg, description="explicit half-resolution segmenter")

    @hookimpl
    def register_datasets(self, register):
        register("blobs", blobs, description="three Gaussian blobs as tiny images")
