"""Explicit baselines: torchvision ResNets and the unrolled MDEQ control (filled in by the model-zoo work)."""
