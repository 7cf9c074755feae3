"""The MDEQ stem: the image to the injection, outside the equilibrium."""

from __future__ import annotations

from torch import Tensor, nn


class Stem(nn.Module):
    """conv3x3–BN–ReLU twice (both stride ``stride``: 2 for ImageNet/Cityscapes, so the solver
    runs at 1/4 resolution; 1 for CIFAR-size inputs), then optionally a 1×1 conv + BN + ReLU
    injection layer (the 2-branch CIFAR-tiny model has none). ``bn_momentum``: the reference
    uses 0.1 in its classification networks, 0.01 in its segmentation ones."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int,
        injection_layer: bool,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stem stride must be 1 or 2, got {stride}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for _ in range(2):
            layers += [
                nn.Conv2d(c_in, channels, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(channels, momentum=bn_momentum),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        if injection_layer:
            layers += [
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels, momentum=bn_momentum),
                nn.ReLU(inplace=True),
            ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
