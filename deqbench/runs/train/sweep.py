"""The evaluation sweep (``[eval] sweep``): the trained model evaluated again at each swept
forward setting, without retraining, one ``<report>.evals.csv`` row each.

Each setting (say ``{"f_max_iter": 8}``) applies over ``[eval]``'s own solver settings, which
apply over the training ``[deq]`` ones. An explicit model has no forward solve to vary: its run
writes no sweep rows (`deqbench.runs.train.settings.LoopSettings` leaves its sweep empty).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from torch.utils.data import DataLoader

from deqbench.data import DatasetInfo
from deqbench.execution.distributed import SINGLE, Dist, reduce_metrics
from deqbench.runs.train.build import TrainState
from deqbench.runs.train.columns import EVAL_COLUMNS
from deqbench.runs.train.loop import evaluate
from deqbench.runs.train.settings import LoopSettings


def sweep(
    state: TrainState,
    loader: DataLoader,
    info: DatasetInfo,
    *,
    settings: LoopSettings,
    dist: Dist = SINGLE,
) -> list[dict[str, Any]]:
    """One `evaluate` per setting of ``settings.eval_sweep``, as ``evals.csv`` rows (none for
    an explicit model or an empty sweep). Each row's ``eval_s`` is its evaluation's wall time."""
    deq = state.model.deq
    if deq is None or not settings.eval_sweep:
        return []
    base = {"f_max_iter": deq.f_max_iter, "f_tol": deq.f_tol, **settings.eval_deq}
    rows = []
    for setting in settings.eval_sweep:
        overrides = {**settings.eval_deq, **setting}
        start = time.perf_counter()
        result, _ = evaluate(
            state,
            loader,
            info,
            settings=dataclasses.replace(settings, eval_deq=overrides),
            dist=dist,
        )
        seconds = time.perf_counter() - start
        reduce_metrics(result, dist)  # the residual median: the largest of the ranks'
        used = {**base, **setting}
        row = {
            "run": settings.run,
            "setting": json.dumps(setting, sort_keys=True),
            "f_max_iter": used["f_max_iter"],
            "f_tol": used["f_tol"],
        }
        row.update({k: v for k, v in result.items() if k in EVAL_COLUMNS})
        rows.append({**row, "eval_s": seconds})
    return rows
