"""The explicit baselines' factories (imported on first use by `deqbench_plugins.baselines`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torchvision
from torch import Tensor, nn

from deqbench.models import DEQSettings, Model
from deqbench_plugins.mdeq.variants import build_cell, build_head, head_task, unroll, variant


class ResNet(Model):
    """A torchvision ResNet, randomly initialised, ``num_classes`` outputs. ``small_stem``
    (default: image_size <= 64) swaps the 7x7/2 conv and max-pool for one 3x3/1 conv, the
    usual stem for 32x32 inputs."""

    def __init__(self, arch: str, num_classes: int, in_channels: int, small_stem: bool) -> None:
        super().__init__()
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if small_stem:
            self.net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.net.maxpool = nn.Identity()
        elif in_channels != 3:
            self.net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _resnet(arch: str):
    def factory(
        *,
        num_classes: int,
        in_channels: int = 3,
        image_size: int | None = None,
        head: str | None = None,
        head_options: Mapping[str, Any] | None = None,
        deq: DEQSettings | None = None,
        small_stem: bool | None = None,
    ) -> ResNet:
        if head:
            raise ValueError(f"{arch} has a head of its own; it takes no head (got {head!r})")
        small = small_stem if small_stem is not None else (image_size or 224) <= 64
        return ResNet(arch, num_classes, in_channels, small)

    factory.__name__ = factory.__qualname__ = arch
    factory.__doc__ = f"torchvision {arch}, random init (option small_stem for 32x32 inputs)."
    factory.task = "classification"  # checked against the dataset's at validation
    return factory


resnet18 = _resnet("resnet18")
resnet50 = _resnet("resnet50")
resnet101 = _resnet("resnet101")


class ExplicitMDEQ(Model):
    """An MDEQ variant's cell applied ``depth`` times from zero, trained by ordinary backprop:
    the explicit, weight-tied control of the implicit model (no solver, no statistics)."""

    def __init__(self, cell: nn.Module, head: nn.Module, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"explicit-mdeq: depth must be >= 1, got {depth}")
        self.cell, self.head, self.depth = cell, head, depth
        self.task = getattr(head, "task", "classification")

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(unroll(self.cell, x, self.depth))
        if self.task == "segmentation" and logits.shape[-2:] != x.shape[-2:]:
            logits = nn.functional.interpolate(
                logits, size=x.shape[-2:], mode="bilinear", align_corners=True
            )
        return logits


def explicit_mdeq(
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | None = None,
    head: str | None = None,
    head_options: Mapping[str, Any] | None = None,
    deq: DEQSettings | None = None,
    variant: str = "cpu-small",
    depth: int | None = None,
    dropout: float | None = None,
    init: str = "reference",
) -> ExplicitMDEQ:
    """The cell of MDEQ ``variant`` unrolled ``depth`` times (default: the variant's L),
    initialised as the implicit model (``init``)."""
    cfg = _variant(variant)
    cell = build_cell(cfg, in_channels, image_size, dropout, init, head_task(head, cfg))
    head_module = build_head(head, cfg, cell.channels, num_classes, head_options)
    return ExplicitMDEQ(cell, head_module, cfg.unroll if depth is None else int(depth))


_variant = variant
#: The task of the ``variant`` option's default head (`deqbench.suite.train.declared_task`).
explicit_mdeq.task = lambda options: _variant(options.get("variant", "cpu-small")).head
