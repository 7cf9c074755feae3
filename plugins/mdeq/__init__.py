"""MDEQ: the multiscale cell, its task heads and the published variants.

Registered as ``"module:attr"`` strings, so `deqbench list` imports no torch.
"""

from __future__ import annotations

from deqbench.hookspecs import hookimpl
from deqbench_plugins.mdeq.configs import VARIANTS

_V = "deqbench_plugins.mdeq.variants"
_H = "deqbench_plugins.mdeq.heads"

#: (registered name, variant key, what the listing says)
MODELS: tuple[tuple[str, str, str], ...] = (
    ("mdeq-cifar-tiny", "cifar-tiny", "MDEQ CIFAR tiny: 2 branches 24,24, 0.16M params"),
    ("mdeq-cifar-large", "cifar-large", "MDEQ CIFAR large: 4 branches 32-256, 11.1M params"),
    ("mdeq-imagenet-small", "imagenet-small", "MDEQ ImageNet small: 32-256, 16.8M params"),
    ("mdeq-imagenet-large", "imagenet-large", "MDEQ ImageNet large: 80-640, 67.1M params"),
    ("mdeq-imagenet-xl", "imagenet-xl", "MDEQ ImageNet XL: 88-704, E=6, 90.5M params"),
    ("mdeq-cityscapes-small", "cityscapes-small", "MDEQ Cityscapes small (seg head), 9.0M"),
    ("mdeq-cityscapes-large", "cityscapes-large", "MDEQ Cityscapes large (seg head), 56.0M"),
    ("mdeq-cityscapes-xl", "cityscapes-xl", "MDEQ Cityscapes XL (seg head), 79.6M"),
    ("mdeq-cpu-small", "cpu-small", "MDEQ for CPU work (not from the paper): 16,32 ch, E=2"),
)


@hookimpl
def register_cells(register):
    register("mdeq", f"{_V}:mdeq_cell", description="MDEQ multiscale cell (stem as injection)")


@hookimpl
def register_heads(register):
    register(
        "classification",
        f"{_H}:ClassificationHead",
        description="HRNet-style bottlenecks, incremental merge, 1x1, pool, linear",
    )
    register(
        "segmentation",
        f"{_H}:SegmentationHead",
        description="upsample branches, concat, 1x1-BN-ReLU-1x1 to classes",
    )


@hookimpl
def register_models(register):
    for name, key, description in MODELS:
        factory = f"{_V}:mdeq_{key.replace('-', '_')}"
        register(name, factory, description=description, details=VARIANTS[key].describe())
