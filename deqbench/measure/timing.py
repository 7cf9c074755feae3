"""Timers and memory meters that work on the CPU and on CUDA.

Times are medians over repeats after warm-up, with CUDA synchronised around each timed region.
Memory has three honest readings: the CUDA allocator's peak, the process's peak resident set
(CPU), and `LiveTensorMeter`, which follows every tensor storage an op allocates and when it is
freed, so it can tell a solver's own buffers apart from those of the function it calls.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from deqbench.measure.memory import storage_key

MB = 2**20


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels, so that a timer reads the work and not the launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_iqr(samples: Sequence[float]) -> tuple[float, float]:
    """The median and the interquartile range (0 for a single sample)."""
    if len(samples) < 2:
        return statistics.median(samples), 0.0
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q[2] - q[0]


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: median and interquartile range over the repeats."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        return median_iqr(self.samples_ms)[1]

    def ratios(self, other: Timing) -> tuple[float, ...]:
        """This timing over ``other``, repeat by repeat: for timings from one
        `time_interleaved`, each ratio compares calls made back to back, so drift in the
        machine's speed, which moves both, cancels out of it (their medians' ratio keeps it)."""
        return tuple(a / b for a, b in zip(self.samples_ms, other.samples_ms, strict=True))


def time_call(fn: Callable[[], object], device: torch.device | str) -> float:
    """Milliseconds one call of ``fn`` takes, synchronised on CUDA."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device | str, repeats: int, warmup: int
) -> dict[str, Timing]:
    """Time several callables side by side, alternating them, so that drift in the machine's
    load hits all of them alike; compare them by `Timing.ratios`."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(time_call(fn, device))
    return {name: Timing(tuple(s)) for name, s in samples.items()}


def peak_rss_mb() -> float:
    """The process's peak resident set so far (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


@contextlib.contextmanager
def cuda_peak(device: torch.device | str) -> Iterator[dict[str, float]]:
    """Yields a dict whose ``peak_mb`` is the CUDA peak allocated inside the block (None on CPU)."""
    out: dict[str, float] = {}
    device = torch.device(device)
    if device.type != "cuda":
        yield out
        return
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    yield out
    sync(device)
    out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / MB


class LiveTensorMeter(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the block and alive at once.

    Every op's outputs are followed until their storage is freed; a storage shared by views is
    counted once, and one that existed before the block (an input, kept buffers) not at all.
    What work inside ``excluded()`` allocates is not counted, even when the code outside views
    it later: that is how a solver's own buffers are told apart from what its function ``f``
    allocates. Memory that NumPy allocates is not seen (the host path's traces and small
    systems, a few KB). This is a measuring pass: it is slow, so never time the same call that
    it meters.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self._foreign: set[int] = set()  # storages allocated by excluded work
        self.current = 0
        self.peak = 0
        self._paused = 0

    @property
    def peak_mb(self) -> float:
        return self.peak / MB

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def exclude(self, fn: Callable) -> Callable:
        """``fn`` wrapped so that what it allocates is not counted."""

        def wrapped(*args, **kwargs):
            with self.excluded():
                return fn(*args, **kwargs)

        return wrapped

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # An output on an input's storage (a view, an in-place or out= op) allocated nothing,
        # so memory from before the block (the caller's z0, buffers a solver kept from its
        # last solve) is never counted, even when the block views it.
        leaves = tree_leaves((args, kwargs))
        inputs = {storage_key(t) for t in leaves if isinstance(t, torch.Tensor)}
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and storage_key(t) not in inputs:
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or key in self._live or key in self._foreign:
            return
        if self._paused:  # made by excluded work: never counted, even when viewed later
            self._foreign.add(key)
            weakref.finalize(storage, self._foreign.discard, key)
            return
        self._live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)
