"""A training run calls the loggers its suite selects, registered through the same
``register_loggers`` hook a third party uses: start with the config, the step rows and every
evaluation in step order, the final row, close; close with the error when the run raised; and
only on the main rank."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from deqbench import plugins
from deqbench.execution.distributed import Dist
from deqbench.execution.runner import run_suite
from deqbench.hookspecs import hookimpl
from deqbench.loggers import RunLogger
from deqbench.report.results import read_report
from deqbench.runs.train.logs import open_loggers
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys


class Recorder(RunLogger):
    """Records every call, in order, for the test to read."""

    calls: ClassVar[list[tuple]] = []

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def start(self, run):
        self.calls.append(("start", run, self.tag))

    def log_scalars(self, step, scalars):
        self.calls.append(("scalars", step, dict(scalars)))

    def finish(self, row):
        self.calls.append(("finish", dict(row)))

    def close(self, error=None):
        self.calls.append(("close", error))


class RecorderPlugin:
    @hookimpl
    def register_loggers(self, register):
        register("recorder", Recorder, description="records the calls (tests)")


@pytest.fixture
def toys():
    Recorder.calls.clear()
    plugins.reset_registry(("train-toys", TrainToys()), ("recorder", RecorderPlugin()))
    yield
    plugins.reset_registry()


def suite_file(tmp_path: Path, model_options: str = "") -> Path:
    path = tmp_path / "logged.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [suite]
            name = "logged"
            kind = "train"
            device = "cpu"
            isolate = false
            checkpoint = false
            [dataset]
            name = "blobs"
            image_size = 4
            batch_size = 8
            [model]
            name = "tiny-deq"
            options = {{ {model_options} }}
            [recipe]
            optimizer = "sgd"
            lr = 0.05
            steps = 8
            [eval]
            every_epochs = 1  # blobs: 48 images, 6 steps an epoch: after step 6 and at the end
            max_batches = 1
            grad_check = false
            [logging]
            loggers = ["recorder"]
            [logging.options.recorder]
            tag = "t"
            """
        )
    )
    return path


def test_a_run_tells_its_loggers_everything_in_step_order(toys, tmp_path):
    out = tmp_path / "r.csv"
    run_suite(load_suite(suite_file(tmp_path)), out, torch.device("cpu"))
    (row,) = read_report(out).to_dict("records")
    steps = read_report(tmp_path / "r.steps.csv")
    calls = Recorder.calls
    kinds = [c[0] for c in calls]
    assert kinds == ["start"] + ["scalars"] * 10 + ["finish", "close"]
    _, logged, tag = calls[0]
    assert tag == "t"  # the [logging.options.recorder] table reached the factory
    assert (logged.suite, logged.index, logged.name) == ("logged", 0, "run-000-tiny-deq")
    assert logged.report == out
    assert logged.config["recipe"]["lr"] == 0.05 and logged.config["run"]["seed"] == 0
    assert logged.flat_config()["dataset.name"] == "blobs" and "logging" not in logged.config
    scalars = [(c[1], c[2]) for c in calls if c[0] == "scalars"]
    # steps 0..5, the interim evaluation after 6 steps, steps 6..7, the final one after 8
    assert [step for step, _ in scalars] == [0, 1, 2, 3, 4, 5, 6, 6, 7, 8]
    trained = [values for step, values in scalars if "train/loss" in values]
    assert [v["train/loss"] for v in trained] == pytest.approx(steps["loss"].tolist())
    assert [v["train/f_nfe"] for v in trained] == steps["f_nfe"].tolist()
    interim, final = (values for _, values in scalars if "eval/top1" in values)
    assert set(interim) == set(final) and "eval/loss" in final
    assert final["eval/top1"] == pytest.approx(row["eval_top1"])
    finished = calls[-2][1]
    assert finished["status"] == "completed" and finished["model"] == "tiny-deq"
    assert finished["eval_top1"] == pytest.approx(row["eval_top1"])
    assert finished["steps_done"] == 8 and finished["run"] == 0
    assert calls[-1] == ("close", None)


def test_a_diverged_run_ends_with_its_row(toys, tmp_path):
    out = tmp_path / "r.csv"
    run_suite(load_suite(suite_file(tmp_path, "nan_at_step = 2")), out, torch.device("cpu"))
    calls = Recorder.calls
    assert calls[-2][0] == "finish" and calls[-2][1]["status"] == "diverged"
    assert calls[-1] == ("close", None)
    assert read_report(out)["status"].tolist() == ["diverged"]


def test_a_run_that_raises_closes_its_loggers_with_the_error(toys, tmp_path):
    out = tmp_path / "r.csv"
    run_suite(load_suite(suite_file(tmp_path, "fail_at_step = 2")), out, torch.device("cpu"))
    calls = Recorder.calls
    assert "finish" not in [c[0] for c in calls]
    kind, error = calls[-1]
    assert kind == "close" and isinstance(error, RuntimeError)
    assert read_report(out)["status"].tolist() == ["error"]


def test_loggers_run_on_the_main_rank_only(toys, tmp_path):
    (run,) = load_suite(suite_file(tmp_path)).runs
    assert open_loggers(run, tmp_path / "r.csv", Dist(rank=1, world_size=2)) is None
    assert open_loggers(run, None, Dist()) is None  # no report: nowhere to log beside
    group = open_loggers(run, tmp_path / "r.csv", Dist(rank=0, world_size=2))
    assert group is not None and [c[0] for c in Recorder.calls] == ["start"]
    group.close()
