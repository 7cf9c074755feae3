"""Explicit baselines: torchvision ResNets and the unrolled MDEQ control."""
