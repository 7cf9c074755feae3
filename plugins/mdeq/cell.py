"""The MDEQ cell: per-branch residual blocks, multiscale fusion and post-fusion convs.

Weight-normed weights are computed once per forward in `reset` (not per solver iteration), and
the variational dropout masks are drawn once per forward and reused at every iteration and in
the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deqbench.cell import Cell
from deqbench.state import State
from deqbench_plugins.mdeq.initialization import check_init, init_direction, init_plain_convs
from deqbench_plugins.mdeq.stem import Stem


class WNConv2d(nn.Module):
    """A bias-free conv with weight norm (a gain per output channel), ``w = g · v / ‖v‖``.

    `compute` caches the normalized weight; the cell calls it once per forward. ``computations``
    counts how often that happened (tests check it is once per forward). The direction starts
    as ``init`` says (`deqbench_plugins.mdeq.initialization`), the gain at its norm, so ``w``
    starts equal to ``v``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, init: str = "reference") -> None:
        super().__init__()
        self.padding = kernel // 2
        v = init_direction(torch.empty(c_out, c_in, kernel, kernel), init)
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        self._weight: Tensor | None = None
        self.computations = 0

    def compute(self) -> None:
        v = self.weight_v
        norm = v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        self._weight = self.weight_g * v / norm
        self.computations += 1

    def forward(self, x: Tensor) -> Tensor:
        if self._weight is None or self._weight.dtype != self.weight_v.dtype:
            self.compute()
        return F.conv2d(x, self._weight, padding=self.padding)


class VariationalDropout2d(nn.Module):
    """Dropout with one ``(N, C, 1, 1)`` mask per forward: drawn at the first call after
    `reset` and reused until the next `reset`. Identity in eval mode or with ``p = 0``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.mask: Tensor | None = None

    def reset(self) -> None:
        self.mask = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[0], x.shape[1], 1, 1)
        if self.mask is None or self.mask.shape != shape or self.mask.device != x.device:
            keep = torch.rand(shape, device=x.device) >= self.p
            self.mask = keep.to(x.dtype) / (1 - self.p)
        return x * self.mask.to(x.dtype)


class BranchBlock(nn.Module):
    """One residual block of a branch: conv–GN–ReLU–conv–dropout, + injection, GN, + input,
    ReLU, GN."""

    def __init__(
        self, channels: int, expansion: int, dropout: float, groups: int, init: str
    ) -> None:
        super().__init__()
        inner = channels * expansion
        self.conv1 = WNConv2d(channels, inner, 3, init)
        self.gn1 = nn.GroupNorm(groups, inner)
        self.conv2 = WNConv2d(inner, channels, 3, init)
        self.drop = VariationalDropout2d(dropout)
        self.gn2 = nn.GroupNorm(groups, channels)
        self.gn3 = nn.GroupNorm(groups, channels)

    def forward(self, z: Tensor, injection: Tensor | None) -> Tensor:
        out = self.drop(self.conv2(F.relu(self.gn1(self.conv1(z)))))
        if injection is not None:
            out = out + injection
        return self.gn3(F.relu(self.gn2(out) + z))


def _downsample(c_in: int, c_out: int, steps: int, groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(steps):
        last = k == steps - 1
        out = c_out if last else c_in
        layers += [nn.Conv2d(c_in, out, 3, stride=2, padding=1, bias=False)]
        layers += [nn.GroupNorm(groups, out)]
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MDEQCell(Cell):
    """The multiscale equilibrium cell over ``len(channels)`` branches, each half the size of
    the one before. ``inject(x)`` runs the stem on an image; the injection feeds branch 0.

    Options: ``channels`` per branch, ``expansion`` E of the block convs, ``dropout`` (the
    variational rate), ``groups`` of the GroupNorms, ``in_channels`` of the image, ``stem_stride``
    (1 for CIFAR-size inputs, 2 for ImageNet/Cityscapes: two stride-2 convs), ``injection_layer``
    (the 1×1 conv + BN + ReLU after the stem), ``image_size`` (for the conformance kit's input),
    ``init`` (``"reference"``: the published runs' effective init, or ``"intended"``; see
    `deqbench_plugins.mdeq.initialization`) and ``bn_momentum`` of the stem's BatchNorms (the
    reference's segmentation network uses 0.01, its classification network 0.1).
    """

    def __init__(
        self,
        channels: Sequence[int] = (24, 24),
        expansion: int = 5,
        dropout: float = 0.0,
        groups: int = 8,
        in_channels: int = 3,
        stem_stride: int = 1,
        injection_layer: bool = True,
        image_size: int = 32,
        init: str = "reference",
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        check_init(init)
        self.channels = tuple(int(c) for c in channels)
        for c in self.channels:
            if c % groups or c % max(groups // 2, 1):
                raise ValueError(f"mdeq: branch channels {c} not divisible by {groups} groups")
        self.input_shape = (in_channels, image_size, image_size)
        self.stem = Stem(in_channels, self.channels[0], stem_stride, injection_layer, bn_momentum)
        self.blocks = nn.ModuleList(
            BranchBlock(c, expansion, dropout, groups, init) for c in self.channels
        )
        n = len(self.channels)
        self.fuse = nn.ModuleList()
        for i, ci in enumerate(self.channels):
            row = nn.ModuleList()
            for j, cj in enumerate(self.channels):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # lower resolution into higher: 1x1 + GN, upsampled in forward
                    row.append(
                        nn.Sequential(nn.Conv2d(cj, ci, 1, bias=False), nn.GroupNorm(groups, ci))
                    )
                else:
                    row.append(_downsample(cj, ci, i - j, groups))
            self.fuse.append(row)
        self.post = nn.ModuleList(
            nn.Sequential(nn.ReLU(), WNConv2d(c, c, 1, init), nn.GroupNorm(max(groups // 2, 1), c))
            for c in self.channels
        )
        self.num_branches = n
        init_plain_convs(self)  # the stem's and the fusion's convs

    def wn_convs(self) -> list[WNConv2d]:
        return [m for m in self.modules() if isinstance(m, WNConv2d)]

    def reset(self) -> None:
        """Recompute the weight-normed weights and clear the dropout masks (once per forward)."""
        for m in self.modules():
            if isinstance(m, WNConv2d):
                m.compute()
            elif isinstance(m, VariationalDropout2d):
                m.reset()

    def inject(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def branch_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        sizes = [(height, width)]
        for _ in range(self.num_branches - 1):
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))  # what a stride-2 3x3 conv gives
        return sizes

    def init_state(self, injection: Tensor) -> State:
        b, _, h, w = injection.shape
        return tuple(
            injection.new_zeros(b, c, hh, ww)
            for c, (hh, ww) in zip(self.channels, self.branch_sizes(h, w), strict=True)
        )

    def forward(self, z: State, injection: Tensor) -> State:
        blocks = [
            blk(zi, injection if i == 0 else None)
            for i, (blk, zi) in enumerate(zip(self.blocks, z, strict=True))
        ]
        out = []
        for i, row in enumerate(self.fuse):
            size = blocks[i].shape[-2:]
            total = blocks[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(blocks[j])
                if j > i:
                    y = F.interpolate(y, size=size, mode="nearest")
                total = total + y
            out.append(self.post[i](total))
        return tuple(out)
