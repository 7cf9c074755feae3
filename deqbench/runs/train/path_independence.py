"""Path independence at a training run's final evaluation (``[eval] path_independence``):
each eval batch solved again from other starts (`deqbench.measure.path_independence`), summed
up as the row's ``eval_pi_*`` columns."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deqbench.execution.distributed import Dist, all_reduce
from deqbench.measure.path_independence import STARTS, path_independence
from deqbench.models import Model


class PathMeter:
    """Accumulates, over eval batches, the predictions that agree with the default start's and
    each sample's relative distance between the equilibria, per start in `STARTS`."""

    def __init__(self) -> None:
        self.agree: dict[str, list[Tensor]] = {name: [] for name in STARTS}  #: (agreeing, all)
        self.distance: dict[str, list[Tensor]] = {name: [] for name in STARTS}

    def update(self, model: Model, x: Tensor, logits: Tensor, seed: int) -> None:
        """After the default forward of ``x`` (whose ``logits`` and ``model.stats`` are the
        reference), solve it from the other starts; the noise is drawn with ``seed``."""
        stats = model.stats
        if stats is None or stats.forward is None:
            return
        reference = (logits, stats.forward.result.z)
        results = path_independence(model, x, STARTS, seed=seed, reference=reference)
        for name, result in results.items():
            counts = torch.stack([result.agree.sum(), torch.tensor(result.agree.numel())])
            self.agree[name].append(counts.to(result.agree.device))
            self.distance[name].append(result.distance)

    def result(self, dist: Dist) -> dict[str, Any]:
        """``eval_pi_agreement_<start>`` (over every rank's predictions) and
        ``eval_pi_distance_<start>`` (this rank's median; under DDP the largest of the ranks')."""
        out: dict[str, Any] = {}
        for name in STARTS:
            parts = self.agree[name]
            counts = torch.stack(parts).sum(0).double().cpu() if parts else torch.zeros(2)
            median = torch.tensor([-1.0], dtype=torch.float64)  # -1: no samples on this rank
            if self.distance[name]:
                median[0] = float(torch.cat(self.distance[name]).median())
            if dist.enabled:
                all_reduce(counts)
                all_reduce(median, torch.distributed.ReduceOp.MAX)
            if counts[1] > 0:
                out[f"eval_pi_agreement_{name}"] = float(counts[0] / counts[1])
            if median[0] >= 0:
                out[f"eval_pi_distance_{name}"] = float(median[0])
        return out
