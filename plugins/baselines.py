"""Explicit baselines: torchvision ResNets (randomly initialised) and the unrolled MDEQ
control, registered as ``"module:attr"`` strings (no torch import when listing)."""

from __future__ import annotations

from deqbench.hookspecs import hookimpl

_M = "deqbench_plugins.baselines_models"

MODELS = (
    ("resnet18", f"{_M}:resnet18", "torchvision ResNet-18, random init; option small_stem"),
    ("resnet50", f"{_M}:resnet50", "torchvision ResNet-50, random init; option small_stem"),
    ("resnet101", f"{_M}:resnet101", "torchvision ResNet-101, random init; option small_stem"),
    (
        "explicit-mdeq",
        f"{_M}:explicit_mdeq",
        "an MDEQ variant's cell unrolled L times, ordinary backprop (options variant, depth)",
    ),
)


@hookimpl
def register_models(register):
    for name, target, description in MODELS:
        register(name, target, description=description)
