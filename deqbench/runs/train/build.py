"""Building a training run: seeding, its data source and model from the registry, and the
`TrainState` it trains (model, optimizer, scheduler, grad scaler and the step/epoch counters)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deqbench.data import DataSource
from deqbench.models import DEQSettings, Model
from deqbench.plugins import get_registry
from deqbench.runs.train.recipe import build_optimizer, build_scheduler
from deqbench.runs.train.target import Target
from deqbench.suite.train import TrainRun


@dataclass
class TrainState:
    """What carries over from step to step: all that a checkpoint needs to resume a run."""

    model: Model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int = 0
    epoch: int = 0
    saved_mb: float | None = None  #: saved activations of the metered step
    net: torch.nn.Module | None = None  #: what the forward goes through (DDP); None: model
    target: Target | None = None  #: the run's ``[eval]`` target, and when it was reached

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "saved_mb": self.saved_mb,
            "target": self.target.state_dict() if self.target is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.saved_mb = state.get("saved_mb")
        if self.target is not None and state.get("target") is not None:
            self.target.load_state_dict(state["target"])


def seed_everything(seed: int) -> None:
    """Seed `random`, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_source(run: TrainRun) -> DataSource:
    """The run's dataset (its factory checks the root at once)."""
    ds = run.spec.dataset
    factory = get_registry().get("datasets", ds.name).obj
    return factory(root=ds.root or None, image_size=ds.image_size, **ds.options)


def deq_settings(run: TrainRun) -> DEQSettings:
    """The run's ``[deq]`` table as the models' `DEQSettings`."""
    return DEQSettings(**run.spec.deq.model_dump())


def build_model(run: TrainRun, source: DataSource, device: torch.device) -> Model:
    """The run's model from its registered factory, on ``device``."""
    spec, info = run.spec, source.info
    factory = get_registry().get("models", spec.model.name).obj
    model = factory(
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        image_size=spec.dataset.image_size,
        head=spec.model.head or None,
        head_options=dict(spec.model.head_options) or None,
        deq=deq_settings(run),
        **spec.model.options,
    )
    return model.to(device)


def total_steps(run: TrainRun, steps_per_epoch: int) -> int:
    """The run's length in steps: the recipe's, cut to the smoke cap; 0 evaluates only."""
    recipe = run.spec.recipe
    total = recipe.steps or (recipe.epochs or 0) * steps_per_epoch
    return min(total, run.max_steps) if run.max_steps else total


def build_state(run: TrainRun, model: Model, steps: int) -> TrainState:
    """A fresh `TrainState`: the recipe's optimizer, a schedule over ``steps`` and a grad
    scaler (enabled for fp16 only)."""
    recipe = run.spec.recipe
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe.schedule, steps, **recipe.schedule_options)
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, enabled=recipe.precision == "fp16")
    return TrainState(model, optimizer, scheduler, scaler)
