"""Time to a target (`deqbench.runs.train.target`): the evaluation that first reaches it, its
steps and training time on the row's own clock, a target never reached, resume, validation.

The exact tests run on a fake clock that moves only when a step, an evaluation or a gradient
check runs (1, 100 and 50 s), with each evaluation's top-1 scripted by the step it is at, so
every figure is known in advance."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from deqbench import plugins
from deqbench.errors import ConfigError
from deqbench.runs.train import loop
from deqbench.runs.train import run as run_module
from deqbench.runs.train.grad_check import GradCheck
from deqbench.runs.train.run import train_run
from deqbench.runs.train.target import Target
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys

CPU = torch.device("cpu")
STEP_S, EVAL_S, CHECK_S = 1.0, 100.0, 50.0
PER_EPOCH = 6  # 48 blobs / 8 per step
TOP1 = {6: 50.0, 12: 80.0, 18: 95.0}  #: the scripted top-1 of the evaluation at each step
CHECKS = 5  # grad_check_every = 4: steps 3, 7, 11, 15 and the last, 17


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


def suite_file(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "suite.toml"
    text = f"""
        [suite]
        name = "tiny"
        kind = "train"
        device = "cpu"
        [dataset]
        name = "blobs"
        image_size = 4
        batch_size = 8
        [model]
        name = "tiny-deq"
        [recipe]
        lr = 0.01
        epochs = 3
        [eval]
        max_batches = 1
        grad_check_every = 4
        {body}
        """
    path.write_text(textwrap.dedent(text))
    return path


class FakeClock:
    """``time`` for the loop and the run: it moves only when a step, an evaluation or a
    gradient check runs; ``interrupt_at`` raises Ctrl-C at that step."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.interrupt_at: int | None = None
        self.evals: list[int] = []

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def fake(monkeypatch, toys) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(run_module, "time", clock)
    monkeypatch.setattr(run_module, "Clock", lambda **kw: loop.Clock(start=clock.now, **kw))
    step, evaluate = loop.train_step, loop.evaluate

    def timed_step(state, *args, **kwargs):
        if state.step == clock.interrupt_at:
            raise KeyboardInterrupt
        loss = step(state, *args, **kwargs)
        clock.now += STEP_S
        return loss

    def scripted_evaluate(state, *args, **kwargs):
        result, traces = evaluate(state, *args, **kwargs)
        clock.now += EVAL_S
        clock.evals.append(state.step)
        return {**result, "eval_top1": TOP1[state.step]}, traces

    def timed_check(*args, **kwargs):
        clock.now += CHECK_S
        return GradCheck(1.0, 0.0, 0.0, None, seconds=CHECK_S)

    monkeypatch.setattr(loop, "train_step", timed_step)
    monkeypatch.setattr(loop, "evaluate", scripted_evaluate)
    monkeypatch.setattr(run_module, "evaluate", scripted_evaluate)
    monkeypatch.setattr(loop, "_check_gradient", timed_check)
    return clock


TARGETS = [  # target, every_epochs → steps to it (None: never), evaluations up to it
    pytest.param(50.0, 1, 6, 1, id="first-eval"),  # steps per epoch × every_epochs
    pytest.param(50.0, 2, 12, 1, id="first-eval-every-2"),
    pytest.param(75.0, 1, 12, 2, id="second-eval"),
    pytest.param(90.0, 1, 18, 3, id="final-eval"),  # then time = the whole train_s
    pytest.param(100.0, 1, None, None, id="never"),
]


@pytest.mark.parametrize(("target", "every", "steps", "evals"), TARGETS)
def test_time_and_steps_to_target_are_exact(fake, tmp_path, target, every, steps, evals):
    overrides = [f"eval.target_top1={target}", f"eval.every_epochs={every}"]
    m = train_run(load_suite(suite_file(tmp_path), overrides).runs[0], CPU).metrics
    assert m["status"] == "completed"
    assert fake.evals == [s for s in (6, 12) if s // PER_EPOCH % every == 0] + [18]
    # train_s excludes the evaluations and gradient checks: the steps' time alone
    assert m["train_s"] == 18 * STEP_S and m["grad_check_s"] == CHECKS * CHECK_S
    assert m["grad_checks"] == CHECKS
    assert (m["target_metric"], m["target_value"]) == ("eval_top1", target)
    assert m["target_reached"] is (steps is not None)
    assert m["steps_to_target"] == steps
    if steps is None:
        assert m["time_to_target_s"] is None and m["target_eval_s"] is None
    else:
        assert m["time_to_target_s"] == steps * STEP_S <= m["train_s"]
        assert m["target_eval_s"] == evals * EVAL_S


def test_a_run_without_a_target_has_no_target_columns(fake, tmp_path):
    m = train_run(load_suite(suite_file(tmp_path)).runs[0], CPU).metrics
    assert not {k for k in m if "target" in k}


@pytest.mark.parametrize("target", [75.0, 90.0, 100.0])  # before, after the cut, never
def test_a_resumed_run_reports_the_same_figures(fake, tmp_path, target):
    path = suite_file(tmp_path)
    run = load_suite(path, [f"eval.target_top1={target}"]).runs[0]
    reference = train_run(run, CPU).metrics
    checkpoint = tmp_path / "run.pt"
    fake.interrupt_at = 14  # after the epoch-end checkpoint and evaluation at step 12
    with pytest.raises(KeyboardInterrupt):
        train_run(run, CPU, checkpoint=checkpoint, resume=True)
    assert checkpoint.exists()
    fake.interrupt_at, fake.now = None, 5000.0  # another process, another clock
    resumed = train_run(run, CPU, checkpoint=checkpoint, resume=True).metrics
    assert resumed["resumed_from_step"] == 12
    columns = [k for k in reference if "target" in k] + ["train_s"]
    assert len(columns) == 7
    assert {k: resumed[k] for k in columns} == {k: reference[k] for k in columns}


def test_the_checkpoint_carries_the_target(fake, tmp_path):
    from deqbench.execution.checkpoint import load_checkpoint

    run = load_suite(suite_file(tmp_path), ["eval.target_top1=75"]).runs[0]
    fake.interrupt_at = 14
    with pytest.raises(KeyboardInterrupt):
        train_run(run, CPU, checkpoint=tmp_path / "run.pt", resume=True)
    saved = load_checkpoint(tmp_path / "run.pt")["state"]["target"]
    assert saved == {
        "metric": "eval_top1",
        "value": 75.0,
        "reached": True,
        "train_s": 12 * STEP_S,
        "steps": 12,
        "eval_s": 2 * EVAL_S,
    }


def test_target_on_the_real_clock(monkeypatch, toys, tmp_path):
    """Real times, scripted top-1: reached at step 12, within train_s."""
    evaluate = loop.evaluate

    def scripted(state, *args, **kwargs):
        result, traces = evaluate(state, *args, **kwargs)
        return {**result, "eval_top1": TOP1[state.step]}, traces

    monkeypatch.setattr(loop, "evaluate", scripted)
    monkeypatch.setattr(run_module, "evaluate", scripted)
    run = load_suite(suite_file(tmp_path), ["eval.target_top1=75"]).runs[0]
    m = train_run(run, CPU).metrics
    assert m["target_reached"] is True and m["steps_to_target"] == 12
    assert 0 < m["time_to_target_s"] < m["train_s"] and m["target_eval_s"] > 0


def test_segmentation_target_on_miou(toys, tmp_path):
    overrides = [
        'model.name="tiny-seg"',
        'dataset.name="synthetic"',
        "dataset.image_size=8",
        'dataset.options={task="segmentation", length=16, eval_length=8}',
        "recipe.epochs=1",
        "eval.target_miou=0.001",  # any model reaches it: a mIoU of 0 needs every pixel wrong
    ]
    m = train_run(load_suite(suite_file(tmp_path), overrides).runs[0], CPU).metrics
    assert m["target_metric"] == "eval_miou"
    assert m["target_reached"] is (m["eval_miou"] >= 0.001)


SEG = 'dataset.name="synthetic"', 'dataset.options={task="segmentation"}'


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.target_top1=100.1"], "eval.target_top1: input should be less than or equal to 100"),
        (["eval.target_top1=0"], "eval.target_top1: input should be greater than 0"),
        (["eval.target_miou=-5"], "eval.target_miou: input should be greater than 0"),
        (
            ["eval.target_top1=90", "eval.target_miou=60"],
            "give at most one of target_top1 or target_miou",
        ),
        (
            ['dataset.name="synthetic"', "eval.target_miou=60"],
            "eval.target_miou: a segmentation target, but dataset 'synthetic' is for "
            "classification; expected eval.target_top1",
        ),
        (
            [*SEG, 'model.name="tiny-seg"', "eval.target_top1=90"],
            "eval.target_top1: a classification target, but dataset 'synthetic' is for "
            "segmentation; expected eval.target_miou",
        ),
    ],
)
def test_targets_are_validated(toys, tmp_path, overrides, message):
    path = suite_file(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_suite(path, overrides)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_a_target_for_another_task_found_only_at_run_time(toys, tmp_path):
    # blobs declares no task up front, so only the run finds the mismatch
    run = load_suite(suite_file(tmp_path), ["eval.target_miou=60"]).runs[0]
    with pytest.raises(ConfigError, match=re.escape("eval.target_miou: a segmentation target")):
        train_run(run, CPU)


def test_target_check_records_the_first_evaluation_only():
    target = Target("eval_top1", 80.0)
    times = {"train_s": 1.0, "eval_s": 2.0}
    assert not target.check({"eval_top1": 79.9}, 5, times)
    assert not target.check({"eval_miou": 99.0}, 6, times)  # another metric: not it
    assert target.check({"eval_top1": 80.0}, 7, times)  # at the target counts
    assert not target.check({"eval_top1": 99.0}, 8, {"train_s": 9.0, "eval_s": 9.0})
    assert (target.steps, target.train_s, target.eval_s) == (7, 1.0, 2.0)
    again = Target("eval_top1", 80.0)
    again.load_state_dict(target.state_dict())
    assert again == target
