"""A training run's data: its training batches epoch after epoch, resumable from any step, and
its evaluation loader; each split over the ranks under torch.distributed."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from deqbench.data import DataSource, make_loader
from deqbench.errors import ConfigError
from deqbench.execution.distributed import Dist, EvalSampler, TrainSampler, rank_batch
from deqbench.runs.train.build import TrainState
from deqbench.suite.train import TrainRun


class Epochs:
    """The training batches, epoch after epoch, from any step: the sampler reshuffles from
    ``seed + epoch`` and skips what the epoch already trained on, and the loader's generator
    (which seeds its workers) is rewound to where the epoch began, so a resumed run sees the
    batches, in order, that an uninterrupted one would have."""

    def __init__(self, loader: DataLoader, sampler: TrainSampler, rank_batch: int) -> None:
        self.loader, self.sampler, self.rank_batch = loader, sampler, rank_batch
        self.per_epoch = sampler.num_samples // rank_batch
        self.epoch_rng: Tensor | None = None  #: the loader generator's state at epoch start
        self._it: Iterator | None = None

    def next(self, state: TrainState) -> tuple[Tensor, Tensor]:
        if self._it is None:
            state.epoch = state.step // self.per_epoch
            self.sampler.set_epoch(state.epoch)
            self.sampler.start = (state.step % self.per_epoch) * self.rank_batch
            if self.epoch_rng is None:
                self.epoch_rng = self.loader.generator.get_state()
            else:
                self.loader.generator.set_state(self.epoch_rng)
            self._it = iter(self.loader)
        return next(self._it)

    def end_epoch(self) -> None:
        """The epoch's last batch was trained on: the next `next` starts a new one."""
        self._it = None
        self.epoch_rng = self.loader.generator.get_state()


def build_batches(
    run: TrainRun, source: DataSource, device: torch.device, dist: Dist
) -> tuple[Epochs, DataLoader]:
    """The run's training `Epochs` and evaluation loader: each rank takes its share of the
    global batch. A batch larger than the training split is a `ConfigError`."""
    ds, info = run.spec.dataset, source.info
    per_rank = rank_batch(ds.batch_size, dist)
    eval_batch = -(-(ds.eval_batch_size or ds.batch_size) // dist.world_size)
    train_set, eval_set = source.dataset(info.train_split), source.dataset(info.eval_split)
    common = {"workers": ds.workers, "device": device, "seed": run.seed}
    sampler = TrainSampler(train_set, dist, seed=run.seed)
    eval_sampler = EvalSampler(eval_set, dist) if dist.enabled else None
    train_loader = make_loader(
        train_set, batch_size=per_rank, shuffle=True, sampler=sampler, drop_last=True, **common
    )
    eval_loader = make_loader(
        eval_set, batch_size=eval_batch, shuffle=False, sampler=eval_sampler, **common
    )
    batches = Epochs(train_loader, sampler, per_rank)
    if batches.per_epoch == 0:
        raise ConfigError(
            f"dataset.batch_size = {ds.batch_size} is larger than the {len(train_set)} "
            f"training samples of {ds.name!r}"
        )
    return batches, eval_loader
