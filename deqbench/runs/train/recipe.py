"""The training recipe's optimizer and learning-rate schedule, from `torch.optim`.

Schedules step once per training step (not per epoch), so a run capped by ``--max-steps``
follows the same curve, compressed to its length.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly", "step")


def build_optimizer(model: nn.Module, recipe: Any) -> torch.optim.Optimizer:
    """``recipe.optimizer`` over the trainable parameters; weight decay skips biases and
    normalisation gains (1-D parameters), as MDEQ's and ResNet's recipes do."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov
        )
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=recipe.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, **options: Any
) -> LRScheduler:
    """A per-step schedule over ``total_steps``: ``constant``; ``cosine`` to 0; ``poly``
    ``(1 - t)^power`` (``power`` 0.9, segmentation's); ``step`` ×``gamma`` (0.1) at each of
    ``milestones`` (fractions of the run, default 0.5 and 0.75)."""
    total = max(1, total_steps)
    if schedule == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    if schedule == "cosine":
        return LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
    if schedule == "poly":
        power = options.get("power", 0.9)
        return LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total) ** power)
    if schedule == "step":
        gamma = options.get("gamma", 0.1)
        marks = [round(f * total) for f in options.get("milestones", (0.5, 0.75))]
        return LambdaLR(optimizer, lambda step: gamma ** sum(step >= m for m in marks))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
