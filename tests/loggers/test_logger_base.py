"""The logger interface: the scalars a step row and an evaluation give, the run's names and
config, the missing-package reason, and a group that calls and closes every logger."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from deqbench.loggers import LoggedRun, LoggerGroup, RunLogger, eval_scalars, step_scalars


def test_step_row_scalars_leave_out_empty_text_and_non_finite_values():
    row = {
        "step": 4,
        "mode": "equilibrium",
        "loss": 2.5,
        "lr": 1e-3,
        "f_nfe": 12,
        "b_nfe": "",
        "f_rel_residual": math.nan,
        "images_per_s": None,
        "backward_ms": 3.0,  # not a logged scalar
    }
    assert step_scalars(row) == {"train/loss": 2.5, "train/f_nfe": 12.0, "train/lr": 1e-3}


def test_eval_columns_become_eval_tags():
    result = {"eval_top1": 71.5, "eval_loss": 0.75, "eval_nfe_mean": None, "eval_pi": math.inf}
    assert eval_scalars(result) == {"eval/top1": 71.5, "eval/loss": 0.75}


def test_a_run_has_a_safe_name_and_a_dotted_config():
    run = LoggedRun(
        "digits",
        7,
        "mdeq-cpu-small solver=broyden f_tol=0.001",
        Path("r.csv"),
        {"deq": {"solver": "broyden", "solver_options": {}}, "run": {"seed": 1}},
    )
    assert run.name == "run-007-mdeq-cpu-small-solver-broyden-f_tol-0.001"
    assert LoggedRun("s", 3, "", Path("r.csv")).name == "run-003"
    assert run.flat_config() == {"deq.solver": "broyden", "deq.solver_options": {}, "run.seed": 1}


class Recorder(RunLogger):
    def __init__(self, calls: list, fail_close: bool = False) -> None:
        self.calls, self.fail_close = calls, fail_close

    def start(self, run):
        self.calls.append((id(self), "start", run.index))

    def log_scalars(self, step, scalars):
        self.calls.append((id(self), "scalars", step, dict(scalars)))

    def finish(self, row):
        self.calls.append((id(self), "finish", row["status"]))

    def close(self, error=None):
        self.calls.append((id(self), "close", error))
        if self.fail_close:
            raise OSError("disk full")


def test_a_group_calls_each_logger_in_turn():
    calls: list = []
    a, b = Recorder(calls), Recorder(calls)
    group = LoggerGroup([a, b])
    group.start(LoggedRun("s", 2, "", Path("r.csv")))
    group.log_step({"step": 0, "loss": 1.5, "lr": 0.1})
    group.log_eval(1, {"eval_top1": 50.0})
    group.finish({"status": "completed"})
    group.close()
    expected = []
    for call in (
        ("start", 2),
        ("scalars", 0, {"train/loss": 1.5, "train/lr": 0.1}),
        ("scalars", 1, {"eval/top1": 50.0}),
        ("finish", "completed"),
        ("close", None),
    ):
        expected += [(id(a), *call), (id(b), *call)]
    assert calls == expected


def test_a_group_closes_every_logger_though_one_fails_to():
    calls: list = []
    a, b = Recorder(calls, fail_close=True), Recorder(calls)
    error = RuntimeError("the run failed")
    with pytest.raises(OSError, match="disk full"):
        LoggerGroup([a, b]).close(error)
    assert calls == [(id(a), "close", error), (id(b), "close", error)]


class NeedsAbsent(Recorder):
    requires = ("deqbench_no_such_package",)
    install = "pip install 'deqbench[absent]'"


class NeedsPresent(Recorder):
    requires = ("pluggy",)


def test_missing_names_the_package_and_what_installs_it():
    assert NeedsAbsent.missing() == (
        "needs the deqbench_no_such_package package, which is not installed; "
        "install it: pip install 'deqbench[absent]'"
    )
    assert NeedsPresent.missing() is None
    assert Recorder.missing() is None
