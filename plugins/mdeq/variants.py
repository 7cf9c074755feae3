"""The published MDEQ variants (and a small CPU one) as registered models.

Each factory follows `deqbench.models`' contract. The variants' numbers, and the published
config each comes from, are in `deqbench_plugins.mdeq.configs`. The DEQ layer is built with
``deq.build(cell, f_max_iter=<variant cap>, b_max_iter=<variant cap>)``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from deqbench.errors import ConfigError, did_you_mean
from deqbench.models import DEQSettings, Model
from deqbench.plugins import get_registry
from deqbench.state import State
from deqbench.stats import DEQStats
from deqbench_plugins.mdeq.cell import MDEQCell
from deqbench_plugins.mdeq.configs import VARIANTS, Variant
from deqbench_plugins.mdeq.convert import FORMAT, REFERENCE


def variant(name: str) -> Variant:
    """The named variant; an unknown name gives a "did you mean" error."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"no MDEQ variant {name!r}{did_you_mean(name, list(VARIANTS))}") from None


def build_head(
    name: str | None,
    cfg: Variant,
    channels: tuple[int, ...],
    num_classes: int,
    options: Mapping[str, Any] | None,
) -> nn.Module:
    """The named registered head (the variant's own when None), with the variant's widths as
    defaults of the classification head."""
    name = name or cfg.head
    kwargs: dict[str, Any] = {}
    if name == "classification" and cfg.head_channels:
        kwargs = {"head_channels": cfg.head_channels, "final_channels": cfg.final_channels}
    kwargs.update(options or {})
    return get_registry().get("heads", name).obj(channels, num_classes, **kwargs)


def head_task(name: str | None, cfg: Variant) -> str:
    """The task of the named registered head (the variant's own when None)."""
    return getattr(get_registry().get("heads", name or cfg.head).obj, "task", "classification")


def build_cell(
    cfg: Variant,
    in_channels: int,
    image_size: int | None,
    dropout: float | None,
    init: str = "reference",
    task: str = "classification",
) -> MDEQCell:
    """The variant's cell; its stem's BatchNorms take the reference's momentum for ``task``
    (0.01 in its segmentation networks, 0.1 in its classification ones)."""
    return MDEQCell(
        cfg.channels,
        cfg.expansion,
        cfg.dropout if dropout is None else dropout,
        in_channels=in_channels,
        stem_stride=cfg.stem_stride,
        injection_layer=cfg.injection_layer,
        image_size=image_size or 32,
        init=init,
        bn_momentum=0.01 if task == "segmentation" else 0.1,
    )


class MDEQModel(Model):
    """An MDEQ: the cell (with its stem) in a DEQ layer, then a head.

    ``set_unrolled(True)`` makes training forwards apply the cell ``unroll`` times from zero
    (a weight-tied explicit stack, ordinary backprop); evaluation always solves for the
    equilibrium. Segmentation logits are upsampled to the input size. It also reads the
    reference implementation's checkpoints (``weights_format = "mdeq-reference"``,
    `deqbench_plugins.mdeq.convert`).
    """

    weight_formats = MappingProxyType({FORMAT: REFERENCE})

    def __init__(
        self, cell: MDEQCell, head: nn.Module, deq: DEQSettings, cfg: Variant, unroll: int
    ) -> None:
        super().__init__()
        self.deq = deq.build(cell, f_max_iter=cfg.f_cap, b_max_iter=cfg.b_cap)
        self.head = head
        self.task = getattr(head, "task", "classification")
        self.unroll = unroll
        self._unrolled = False

    @property
    def cell(self) -> MDEQCell:
        return self.deq.cell

    @property
    def unrolled(self) -> bool:
        return self._unrolled

    def set_unrolled(self, unrolled: bool) -> None:
        self._unrolled = bool(unrolled)

    def features(self, x: Tensor) -> State:
        """The cell's state: unrolled ``unroll`` times while warming up in training, else the
        DEQ layer's equilibrium."""
        if self._unrolled and self.training:
            self.deq.stats = DEQStats()  # no solve ran: report none rather than a stale one
            return unroll(self.cell, x, self.unroll)
        return self.deq(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head_logits(self.features(x), x)

    def head_logits(self, state: State, x: Tensor) -> Tensor:
        """The head on ``state``; segmentation logits upsampled to ``x``'s size."""
        logits = self.head(state)
        if self.task == "segmentation" and logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return logits


def unroll(cell: MDEQCell, x: Tensor, depth: int) -> State:
    """``depth`` applications of the cell from its zero state, with ordinary autograd."""
    cell.reset()
    injection = cell.inject(x)
    z = cell.init_state(injection)
    for _ in range(depth):
        z = cell(z, injection)
    return z


def build_mdeq(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | None = None,
    head: str | None = None,
    head_options: Mapping[str, Any] | None = None,
    deq: DEQSettings | None = None,
    dropout: float | None = None,
    unroll: int | None = None,
    init: str = "reference",
) -> MDEQModel:
    """The MDEQ variant ``name`` (a key of `VARIANTS`). ``init``: ``"reference"`` (the
    published runs' effective init) or ``"intended"`` (`deqbench_plugins.mdeq.initialization`).
    """
    cfg = variant(name)
    cell = build_cell(cfg, in_channels, image_size, dropout, init, head_task(head, cfg))
    head_module = build_head(head, cfg, cell.channels, num_classes, head_options)
    depth = cfg.unroll if unroll is None else int(unroll)
    return MDEQModel(cell, head_module, deq or DEQSettings(), cfg, depth)


def _factory(name: str) -> functools.partial[MDEQModel]:
    """``build_mdeq`` bound to one variant: its signature (the options a suite may set) stays."""
    factory = functools.partial(build_mdeq, name)
    factory.__doc__ = f"MDEQ {name} (options: dropout, unroll L of the warm-up, init)."
    factory.task = variant(name).head  # its default head's task, checked at validation
    factory.weight_formats = tuple(MDEQModel.weight_formats)  # checked at validation
    return factory


mdeq_cifar_tiny = _factory("cifar-tiny")
mdeq_cifar_large = _factory("cifar-large")
mdeq_imagenet_small = _factory("imagenet-small")
mdeq_imagenet_large = _factory("imagenet-large")
mdeq_imagenet_xl = _factory("imagenet-xl")
mdeq_cityscapes_small = _factory("cityscapes-small")
mdeq_cityscapes_large = _factory("cityscapes-large")
mdeq_cityscapes_xl = _factory("cityscapes-xl")
mdeq_cpu_small = _factory("cpu-small")


def mdeq_cell(**options: Any) -> MDEQCell:
    """The registered ``mdeq`` cell (`MDEQCell`'s options)."""
    return MDEQCell(**options)
