"""A training run's checkpoint: its `TrainState`, step log, data position, wall time so far and
every rank's RNG states, written by `save_snapshot` and put back by `restore_snapshot`
(the file itself: `deqbench.execution.checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import torch

from deqbench.execution import checkpoint
from deqbench.execution.distributed import Dist
from deqbench.runs.train.batches import Epochs
from deqbench.runs.train.build import TrainState
from deqbench.runs.train.steplog import StepLog


def save_snapshot(
    path: Path,
    *,
    run: int,
    label: str,
    state: TrainState,
    log: StepLog,
    batches: Epochs,
    times: dict[str, float],
    dist: Dist,
) -> None:
    """Checkpoint run ``run`` (the step log already drained); ``times`` are its ``train_s`` and
    ``eval_s`` so far. Every rank's RNG states are kept, so each rank of a resumed DDP run
    continues its own streams; rank 0 writes the file."""
    rng = checkpoint.rng_state()
    rngs = [rng]
    if dist.enabled:
        rngs = [None] * dist.world_size
        torch.distributed.all_gather_object(rngs, rng)
    if not dist.is_main:
        return
    checkpoint.save_checkpoint(  # through the module: tests stand in for it there
        path,
        {
            "run": run,
            "label": label,
            "state": state.state_dict(),
            "unrolled": state.model.unrolled,  # the warm-up state (also implied by the step)
            "rng": rngs,
            "loader_rng": batches.epoch_rng,  # the train loader's generator at epoch start
            "log": {
                "rows": log.rows,
                "step_ms": log.step_ms,
                "f_ok": log.f_ok,
                "check_s": log.check_s,
            },
            "world_size": dist.world_size,
            **times,
        },
    )


def restore_snapshot(
    path: Path, *, state: TrainState, log: StepLog, batches: Epochs, dist: Dist
) -> dict[str, float]:
    """Put a run back where `save_snapshot` left it in ``path``; RNG states last, after
    everything that draws. Returns the ``train_s`` and ``eval_s`` the run had spent."""
    saved = checkpoint.load_checkpoint(path)
    state.load_state_dict(saved["state"])
    state.model.set_unrolled(bool(saved["unrolled"]))
    log.rows = list(saved["log"]["rows"])
    log.step_ms = [tuple(t) for t in saved["log"]["step_ms"]]
    log.f_ok = list(saved["log"]["f_ok"])
    log.check_s = saved["log"].get("check_s", 0.0)
    batches.epoch_rng = saved["loader_rng"]
    rngs = saved["rng"]
    checkpoint.set_rng_state(rngs[dist.rank % len(rngs)])
    return {"train_s": saved["train_s"], "eval_s": saved["eval_s"]}
