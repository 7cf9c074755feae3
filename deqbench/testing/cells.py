"""Conformance kit for cells: ``check_cell("my-cell", x)``.

It checks the contract the DEQ layer relies on: ``init_state`` gives a tuple of ``(B, ...)``
tensors; ``forward`` keeps their number, shapes, dtypes and devices and stays finite; the state
packs and unpacks exactly; in eval mode ``reset`` is idempotent and the cell deterministic; and a
DEQ forward calls ``reset`` and ``inject`` exactly once, in training and in eval, with a
backward that reaches the parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from deqbench.cell import Cell
from deqbench.deq import DEQ
from deqbench.plugins import get_cell
from deqbench.state import StateSpec, pack, unpack


@contextmanager
def _counting(cell: Cell, *methods: str) -> Iterator[dict[str, int]]:
    """Count calls of the cell's ``methods`` (instance-level wrappers, removed on exit)."""
    counts = dict.fromkeys(methods, 0)

    def wrap(name: str, method: Callable) -> Callable:
        @functools.wraps(method)
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return method(*args, **kwargs)

        return counted

    for name in methods:
        object.__setattr__(cell, name, wrap(name, getattr(cell, name)))
    try:
        yield counts
    finally:
        for name in methods:
            object.__delattr__(cell, name)


def _same(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> bool:
    return all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def check_cell(
    cell: Cell | str,
    x: Tensor | None = None,
    *,
    options: dict[str, Any] | None = None,
    f_max_iter: int = 4,
) -> Cell:
    """Check a cell (or a registered name, built with ``options``) on input ``x``.

    ``x`` defaults to a batch of 2 of the cell's ``input_shape``. The DEQ checks run
    ``f_max_iter`` solver steps only: they test the plumbing, not convergence. Returns the cell;
    raises AssertionError naming the first check that fails.
    """
    name = cell if isinstance(cell, str) else type(cell).__name__
    if isinstance(cell, str):
        cell = get_cell(cell, **(options or {}))
    if x is None:
        shape = getattr(cell, "input_shape", None)
        if shape is None:
            raise ValueError(f"{name}: pass x, the cell has no input_shape")
        param = next(cell.parameters(), None)
        x = torch.randn(2, *shape, dtype=param.dtype if param is not None else None)
    was_training = cell.training
    try:
        _check_contract(name, cell, x)
        _check_deq(name, cell, x, f_max_iter)
    finally:
        cell.train(was_training)
    return cell


def _check_contract(name: str, cell: Cell, x: Tensor) -> None:
    cell.eval()
    with torch.no_grad():
        cell.reset()
        injection = cell.inject(x)
        z0 = cell.init_state(injection)
        assert isinstance(z0, tuple) and z0, f"{name}: init_state must return a non-empty tuple"
        for t in z0:
            assert isinstance(t, Tensor) and t.shape[0] == x.shape[0], (
                f"{name}: init_state tensors must be (B, ...) with B = {x.shape[0]}"
            )
            assert t.is_floating_point(), f"{name}: state dtype {t.dtype} is not floating"
        z1 = cell(z0, injection)
        assert isinstance(z1, tuple) and len(z1) == len(z0), f"{name}: forward changes arity"
        for a, b in zip(z0, z1, strict=True):
            assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device), (
                f"{name}: forward maps {tuple(a.shape)} {a.dtype} to {tuple(b.shape)} {b.dtype}"
            )
            assert torch.isfinite(b).all(), f"{name}: forward is not finite"
        assert _same(unpack(pack(z1), StateSpec.of(z1)), z1), f"{name}: pack/unpack round trip"

        cell.reset()
        cell.reset()
        again = cell(z0, cell.inject(x))
        assert _same(again, z1), f"{name}: reset is not idempotent or eval is not deterministic"


def _check_deq(name: str, cell: Cell, x: Tensor, f_max_iter: int) -> None:
    deq = DEQ(cell, "fixed-point", "ift", f_max_iter=f_max_iter, b_max_iter=f_max_iter)
    with _counting(cell, "reset", "inject") as counts:
        deq.train()
        out = deq(x)
        assert counts == {"reset": 1, "inject": 1}, f"{name}: per training forward {counts}"
        loss = sum(t.float().square().sum() for t in out)
        loss.backward()
        grads = [p.grad for p in cell.parameters() if p.requires_grad]
        assert any(g is not None for g in grads), f"{name}: no parameter gets a gradient"
        assert all(torch.isfinite(g).all() for g in grads if g is not None), f"{name}: grad"
        cell.zero_grad(set_to_none=True)

        deq.eval()
        first = deq(x)
        second = deq(x)
        assert counts == {"reset": 3, "inject": 3}, f"{name}: per eval forward {counts}"
        assert _same(first, second), f"{name}: eval forwards differ"
        assert not any(t.requires_grad for t in first), f"{name}: eval output keeps a graph"
