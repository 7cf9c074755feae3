"""The training loop's settings: what it does and when, read once from a `TrainRun`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from deqbench.data import DatasetInfo
from deqbench.runs.train.metrics import task_loss
from deqbench.suite.train import TrainRun


@dataclass(frozen=True)
class LoopSettings:
    """What the loop does and when: the run's settings, read once by `from_run`."""

    run: int  #: the run's index (its trace rows and checkpoint)
    label: str  #: the run's label (its checkpoint)
    steps: int  #: train until this many steps are done
    warmup: int  #: unrolled steps first (0 for an explicit model)
    precision: str  #: "fp32", "bf16" or "fp16" (autocast)
    label_smoothing: float
    grad_clip: float  #: clip the gradient norm to this; 0: no clipping
    eval_every: int  #: evaluate every this many epochs; 0: only at the end
    eval_max_batches: int  #: per rank; 0: the whole split
    eval_deq: dict[str, Any]  #: the DEQ settings evaluation overrides (``[eval] solver``…)
    grad_check: bool  #: check gradients against the exact one (implicit models)
    grad_check_every: int  #: also every N steps; 0: the last only
    checkpoint: Path | None  #: where to checkpoint; None: never
    checkpoint_every: int  #: also every N steps; 0: epoch ends only
    keep_checkpoints: bool  #: checkpoint the finished run too
    refresh_s: float = 0.5  #: display refresh (a log drain); steps under DDP
    progress_every: int = 100  #: also drain every N steps: the plain progress lines' cadence
    fpc_k: int = 0  #: fixed-point correction's samples (`deqbench.runs.train.correction`); 0: off
    fpc_gamma: float = 0.8  #: its weights' decay
    deadline: float | None = None  #: a `time.perf_counter` value; None: no timeout
    #: ``[eval] sweep``'s settings, each evaluated after the final evaluation (implicit models)
    eval_sweep: tuple[dict[str, Any], ...] = ()
    path_independence: bool = False  #: ``[eval] path_independence`` (implicit models)

    def loss(self, logits: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
        """The recipe's task loss on ``info``'s data (label smoothing, ignored label)."""
        return task_loss(
            logits,
            target,
            task=info.task,
            ignore_index=info.ignore_index,
            label_smoothing=self.label_smoothing,
        )

    @classmethod
    def from_run(
        cls,
        run: TrainRun,
        *,
        steps: int,
        implicit: bool,
        checkpoint: Path | None = None,
        refresh_s: float = 0.5,
        deadline: float | None = None,
    ) -> LoopSettings:
        """The settings of ``run``, ``steps`` long, for an ``implicit`` model or not."""
        recipe, evaluation, suite = run.spec.recipe, run.spec.eval, run.spec.suite
        return cls(
            run=run.index,
            label=run.label,
            steps=steps,
            warmup=recipe.unrolled_warmup_steps if implicit else 0,
            precision=recipe.precision,
            label_smoothing=recipe.label_smoothing,
            grad_clip=recipe.grad_clip,
            eval_every=evaluation.every_epochs,
            eval_max_batches=evaluation.max_batches,
            eval_deq=evaluation.deq_settings() if implicit else {},
            eval_sweep=tuple(evaluation.sweep.settings()) if implicit else (),
            path_independence=implicit and evaluation.path_independence,
            grad_check=implicit and evaluation.grad_check,
            grad_check_every=evaluation.grad_check_every,
            checkpoint=checkpoint if suite.checkpoint else None,
            checkpoint_every=suite.checkpoint_every,
            keep_checkpoints=suite.keep_checkpoints,
            refresh_s=refresh_s,
            progress_every=run.spec.logging.progress_every,
            deadline=deadline,
            fpc_k=recipe.fpc_k,
            fpc_gamma=recipe.fpc_gamma,
        )
