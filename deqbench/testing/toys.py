"""A small two-tensor cell for the conformance kits and tests.

Its state is a ``(B, n)`` vector and a ``(B, c, h)`` grid, like two resolutions; its weight is
weight-normed in ``reset()`` (once per forward, as MDEQ's) and it has an optional variational
dropout mask drawn there too, so the kits can see that both happen once per forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deqbench.cell import Cell
from deqbench.state import State


class ToyCell(Cell):
    """``z ↦ tanh(W z + U x + b)`` split over two state tensors, with ``‖W‖₂ = rho``."""

    def __init__(
        self,
        n: int = 4,
        grid: tuple[int, int] = (2, 3),
        input_dim: int = 5,
        rho: float = 0.5,
        dropout: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.n, self.grid, self.dropout = n, grid, dropout
        dim = n + grid[0] * grid[1]
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(dim, dim, generator=gen, dtype=dtype)
        # Weight norm W = g · V / ‖V‖₂ with g = rho, so ‖W‖₂ = rho at initialisation.
        self.v = nn.Parameter(v)
        self.g = nn.Parameter(torch.tensor(rho, dtype=dtype))
        self.u = nn.Parameter(torch.randn(n, input_dim, generator=gen, dtype=dtype) / input_dim)
        self.bias = nn.Parameter(0.1 * torch.randn(dim - n, generator=gen, dtype=dtype))
        self.input_shape = (input_dim,)
        self.weight: Tensor | None = None
        self.mask: Tensor | None = None

    def reset(self) -> None:
        self.weight = self.g * self.v / torch.linalg.matrix_norm(self.v, ord=2)
        self.mask = None  # drawn lazily at the first iteration, when the batch size is known

    def inject(self, x: Tensor) -> Tensor:
        return x @ self.u.T

    def init_state(self, injection: Tensor) -> State:
        batch = injection.shape[0]
        return (injection.new_zeros(batch, self.n), injection.new_zeros(batch, *self.grid))

    def forward(self, z: State, injection: Tensor) -> State:
        if self.weight is None:
            raise RuntimeError("ToyCell.reset() must run before forward")
        a, b = z
        flat = torch.cat([a, b.flatten(1)], dim=1)
        pre = flat @ self.weight.T + torch.cat([injection, self.bias.expand(a.shape[0], -1)], 1)
        out = torch.tanh(pre)
        if self.training and self.dropout > 0:
            if self.mask is None:  # one mask per forward, reused at every iteration
                keep = torch.rand(out.shape, dtype=out.dtype, device=out.device) >= self.dropout
                self.mask = keep.to(out.dtype) / (1 - self.dropout)
            out = out * self.mask
        return out[:, : self.n], out[:, self.n :].reshape(-1, *self.grid)
