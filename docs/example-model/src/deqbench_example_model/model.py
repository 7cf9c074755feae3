"""The example's cell and model variant (imported only when first used)."""

import torch
from torch import nn

from deqbench import Cell
from deqbench.models import DEQSettings, Model
from deqbench.plugins import get_registry


class GatedConvCell(Cell):
    def __init__(self, channels=16, in_channels=3, image_size=16):
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)  # for check_cell's input
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(4, channels)

    def inject(self, x):
        return self.stem(x)  # once per forward, reused at every solver iteration

    def init_state(self, injection):
        return (torch.zeros_like(injection),)  # a tuple: one tensor per resolution

    def forward(self, z, injection):
        (h,) = z
        return (self.norm(torch.relu(self.conv(h) + injection)),)


class GatedConvModel(Model):
    def __init__(self, cell, head, deq):
        super().__init__()
        self.deq = deq.build(cell, f_max_iter=20, b_max_iter=20)  # the variant's own caps
        self.head = head

    def forward(self, x):
        return self.head(self.deq(x))


def gated_conv_small(
    *,
    num_classes,
    in_channels=3,
    image_size=None,
    head=None,
    head_options=None,
    deq=None,
    channels=16,
):
    cell = GatedConvCell(channels, in_channels, image_size or 16)
    head_factory = get_registry().get("heads", head or "classification").obj
    head_module = head_factory([channels], num_classes, **(head_options or {}))
    return GatedConvModel(cell, head_module, deq or DEQSettings())
