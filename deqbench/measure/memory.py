"""Bytes that autograd saves for the backward pass: the quantity the DEQ memory claim is about.

Counted through `torch.autograd.graph.saved_tensors_hooks`, device-independent (CPU and CUDA
alike), and blind to everything that is not kept for the backward: a solver's buffers and
iterates, temporaries, the optimizer. A storage saved by several nodes (a tensor and its views,
or one activation used twice) is counted once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import torch
from torch import Tensor

MB = 2**20


def storage_key(t: Tensor) -> tuple[Any, int] | None:
    """(device, address) of ``t``'s storage with its size; None for storage-less tensors."""
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse, nested or functorch-wrapped tensors
        return None
    return (str(t.device), storage.data_ptr()), storage.nbytes()


class SavedTensorsMeter:
    """Context manager: ``bytes`` (and ``mb``, ``count``) saved for backward inside the block.

    Sizes are whole storages (a saved view counts its base's storage once). ``ignore``: tensors
    whose storages are not counted, e.g. ``model.parameters()`` to count activations only.
    A storage counted once is counted again only if it was freed and its address reused.
    Meters do not nest: inside another ``saved_tensors_hooks`` block only the innermost counts.
    """

    def __init__(self, ignore: Iterable[Tensor] = ()) -> None:
        self._ignore = {k[0] for k in map(storage_key, ignore) if k is not None}
        # address -> weak references to the tensors saved there, to tell sharing from reuse
        self._seen: dict[Any, list[weakref.ref]] = {}
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None
        self.bytes = 0
        self.count = 0  #: distinct storages counted

    @property
    def mb(self) -> float:
        return self.bytes / MB

    def __enter__(self) -> SavedTensorsMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(exc_type, exc, tb)
        self._hooks = None

    def _pack(self, t: Tensor) -> Tensor:
        found = storage_key(t)
        if found is None:
            self.bytes += t.numel() * t.element_size()
            self.count += 1
            return t
        key, nbytes = found
        if key in self._ignore:
            return t
        refs = [r for r in self._seen.get(key, ()) if r() is not None]
        if not refs:  # a new storage, or a dead one whose address was reused
            self.bytes += nbytes
            self.count += 1
        refs.append(weakref.ref(t))
        self._seen[key] = refs
        return t


def _unpack(t: Tensor) -> Tensor:
    return t
