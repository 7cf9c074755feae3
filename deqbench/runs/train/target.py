"""Time to a target, as MLPerf training measures it: the training time and steps until an
evaluation first reaches the suite's ``[eval] target_top1`` (or ``target_miou``).

Every evaluation of a run checks it: the interim ones (every ``[eval] every_epochs`` epochs,
`deqbench.runs.train.loop.train`) and the final one (`deqbench.runs.train.run.train_run`).
The time is on the row's ``train_s`` clock (`deqbench.runs.train.loop.Clock`): evaluations and
gradient checks excluded, every attempt of a resumed run counted. The evaluation time spent up
to then is stated beside it. The `Target` travels in the run's `TrainState`, so a checkpoint
keeps whether and when it was reached. Under torch.distributed the eval metric is reduced over
the ranks before the check, so every rank decides alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from deqbench.errors import ConfigError
from deqbench.suite.train_tables import TARGETS, EvalTable


@dataclass
class Target:
    """A run's target, and when it was first reached (all None until then)."""

    metric: str  #: the eval column it is a threshold on: ``eval_top1`` or ``eval_miou``
    value: float  #: percent; reached at ``metric >= value``
    reached: bool = False
    train_s: float | None = None  #: training time until then, seconds
    steps: int | None = None  #: optimizer steps done then
    eval_s: float | None = None  #: evaluation time until then (that evaluation included)

    @classmethod
    def of(cls, evaluation: EvalTable, task: str) -> Target | None:
        """The target an ``[eval]`` table declares for a run of ``task``; None: none. A target
        for another task (left unknown when the suite was validated) is a `ConfigError`."""
        declared = evaluation.target()
        if declared is None:
            return None
        key, value = declared
        metric, needs = TARGETS[key]
        if task != needs:
            raise ConfigError(f"eval.{key}: a {needs} target, but the run is for {task}")
        return cls(metric, value)

    def check(self, result: Mapping[str, Any], step: int, times: Mapping[str, float]) -> bool:
        """Record an evaluation's ``result`` at ``step``, with ``times`` (``train_s`` and
        ``eval_s``, that evaluation's included) so far. Whether it first reached the target."""
        value = result.get(self.metric)
        if self.reached or value is None or not value >= self.value:
            return False
        self.reached, self.steps = True, step
        self.train_s, self.eval_s = times["train_s"], times["eval_s"]
        return True

    def columns(self) -> dict[str, Any]:
        """The row's target columns."""
        return {
            "target_metric": self.metric,
            "target_value": self.value,
            "target_reached": self.reached,
            "time_to_target_s": self.train_s,
            "steps_to_target": self.steps,
            "target_eval_s": self.eval_s,
        }

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reached = bool(state["reached"])
        self.train_s, self.steps, self.eval_s = state["train_s"], state["steps"], state["eval_s"]


def check_target(
    target: Target | None, result: Mapping[str, Any], step: int, times: Mapping[str, float]
) -> None:
    """`Target.check`, for a run that may have no target."""
    if target is not None:
        target.check(result, step, times)
