"""MDEQ task heads, each registered as a head: ``head(channels, num_classes, **options)`` maps
a state tuple (one tensor per branch, ``channels[i]`` channels each) to logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deqbench.state import State
from deqbench_plugins.mdeq.initialization import init_plain_convs


class Bottleneck(nn.Module):
    """HRNet's bottleneck ``c_in → h → 4h`` (1×1, 3×3, 1×1, each followed by a BatchNorm without
    affine parameters, as in the reference), projected residual (conv + affine BN)."""

    expansion = 4

    def __init__(self, c_in: int, h: int) -> None:
        super().__init__()
        out = h * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, h, 1, bias=False),
            nn.BatchNorm2d(h, affine=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, padding=1, bias=False),
            nn.BatchNorm2d(h, affine=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, out, 1, bias=False),
            nn.BatchNorm2d(out, affine=False),
        )
        self.skip = (
            nn.Identity()
            if c_in == out
            else nn.Sequential(nn.Conv2d(c_in, out, 1, bias=False), nn.BatchNorm2d(out))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ClassificationHead(nn.Module):
    """Per-branch bottlenecks, an incremental high-to-low merge (stride-2 conv3x3 + BN + ReLU,
    added to the next branch), conv1x1 to ``final_channels`` + BN + ReLU, average pool, linear.

    ``head_channels`` defaults to ``channels // 4`` rounded up, ``final_channels`` to 4× the
    last branch's head width. Convs start from N(0, 0.01), as in the reference.
    """

    task = "classification"

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        head_channels: Sequence[int] | None = None,
        final_channels: int | None = None,
    ) -> None:
        super().__init__()
        channels = list(channels)
        hc = list(head_channels) if head_channels else [max(1, -(-c // 4)) for c in channels]
        if len(hc) != len(channels):
            raise ValueError(f"head_channels {hc} must give one width per branch {channels}")
        final = final_channels or 4 * hc[-1]
        self.incre = nn.ModuleList(Bottleneck(c, h) for c, h in zip(channels, hc, strict=True))
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(4 * hc[i], 4 * hc[i + 1], 3, stride=2, padding=1),
                nn.BatchNorm2d(4 * hc[i + 1]),
                nn.ReLU(inplace=True),
            )
            for i in range(len(hc) - 1)
        )
        self.final = nn.Sequential(
            nn.Conv2d(4 * hc[-1], final, 1), nn.BatchNorm2d(final), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Linear(final, num_classes)  # PyTorch's init, as the reference's
        init_plain_convs(self)

    def forward(self, z: State) -> Tensor:
        y = self.incre[0](z[0])
        for i, down in enumerate(self.down):
            y = self.incre[i + 1](z[i + 1]) + down(y)
        y = self.final(y)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class SegmentationHead(nn.Module):
    """Upsample every branch bilinearly (corners aligned, as the reference) to branch 0's size,
    concatenate (ΣC channels),
    conv1x1 → BN → ReLU → conv1x1 to the classes (logits at branch 0's resolution; the model
    upsamples them to the input size). Convs start from N(0, 0.01); the BatchNorm's momentum
    is the reference segmentation network's 0.01."""

    task = "segmentation"

    def __init__(
        self, channels: Sequence[int], num_classes: int, bn_momentum: float = 0.01
    ) -> None:
        super().__init__()
        total = sum(channels)
        self.layers = nn.Sequential(
            nn.Conv2d(total, total, 1),
            nn.BatchNorm2d(total, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(total, num_classes, 1),
        )
        init_plain_convs(self)

    def forward(self, z: State) -> Tensor:
        size = z[0].shape[-2:]
        ups = [z[0]] + [
            F.interpolate(t, size=size, mode="bilinear", align_corners=True) for t in z[1:]
        ]
        return self.layers(torch.cat(ups, dim=1))
