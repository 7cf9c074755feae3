"""One training run → one row: warm-up switch, divergence and error rows, determinism, memory."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from deqbench import plugins
from deqbench.errors import ConfigError
from deqbench.execution.runner import run_suite
from deqbench.hookspecs import hookimpl
from deqbench.report.results import read_report
from deqbench.runs.train.columns import STEP_COLUMNS, TRAIN_COLUMNS
from deqbench.runs.train.run import train_run
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys, tiny_deq

CPU = torch.device("cpu")
BUILT: list = []


def recording_deq(**kwargs):
    model = tiny_deq(**kwargs)
    BUILT.append(model)
    return model


def interrupting(**kwargs):
    raise KeyboardInterrupt


class Extra:
    @hookimpl
    def register_models(self, register):
        register("recorded-deq", recording_deq)
        register("interrupting", interrupting)


@pytest.fixture
def toys():
    BUILT.clear()
    registry = plugins.reset_registry(("train-toys", TrainToys()), ("extra", Extra()))
    yield registry
    plugins.reset_registry()


def suite_file(tmp_path: Path, body: str, steps: int = 4, warmup: int = 0) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [suite]
            name = "tiny"
            kind = "train"
            device = "cpu"
            [dataset]
            name = "blobs"
            image_size = 4
            batch_size = 8
            [model]
            name = "recorded-deq"
            [recipe]
            lr = 0.01
            steps = {steps}
            unrolled_warmup_steps = {warmup}
            [eval]
            max_batches = 1
            """
        )
        + textwrap.dedent(body)
    )
    return path


def test_warmup_switches_at_the_configured_step(toys, tmp_path):
    suite = load_suite(suite_file(tmp_path, "", steps=5, warmup=2))
    out = train_run(suite.runs[0], CPU)
    model = BUILT[-1]
    assert model.modes == ["unrolled"] * 2 + ["equilibrium"] * 3
    m = out.metrics
    assert m["status"] == "completed"
    assert (m["steps_done"], m["unrolled_steps"], m["equilibrium_steps"]) == (5, 2, 3)
    assert [r["mode"] for r in out.steps] == model.modes and [r["step"] for r in out.steps] == [
        0,
        1,
        2,
        3,
        4,
    ]
    # solver columns come from equilibrium steps only; the first of them is the metered one
    eq = [r for r in out.steps if r["mode"] == "equilibrium"]
    assert all(r["f_nfe"] >= 1 for r in eq) and all(r["f_nfe"] is None for r in out.steps[:2])
    assert m["f_nfe_mean"] == pytest.approx(sum(r["f_nfe"] for r in eq) / 3)
    assert m["b_nfe_mean"] >= 1 and 0 <= m["f_converged_frac"] <= 1
    assert m["saved_mb"] > 0 and m["eval_nfe_mean"] >= 1 and 0 <= m["eval_top1"] <= 100
    assert out.traces and out.traces[0]["step"] == 0


def test_nan_and_errors_leave_rows_and_the_suite_goes_on(toys, tmp_path):
    body = """
    [[include]]
    "model.options.nan_at_step" = 2
    [[include]]
    "model.options.fail_at_step" = 1
    [[include]]
    "model.name" = "tiny-mlp"
    """
    suite = load_suite(suite_file(tmp_path, body))
    out = tmp_path / "r.csv"
    outcome = run_suite(suite, out, CPU)
    frame = read_report(out)
    assert list(frame.columns) == list(TRAIN_COLUMNS)
    # with no [matrix], the product is the base run alone; the includes follow it
    assert frame["status"].tolist() == ["completed", "diverged", "error", "completed"]
    _, nan, err, ok = frame.to_dict("records")
    assert "became nan at step 2" in nan["error"] and nan["steps_done"] == 3
    assert pd_isna(nan["eval_top1"])  # a diverged run is not evaluated
    assert "RuntimeError: tiny-deq fails at step 1" in err["error"]
    assert ok["eval_top1"] >= 0 and pd_isna(ok["solver"]) and pd_isna(ok["f_nfe_mean"])
    assert outcome.failed == 2  # the error and the diverged run, which trained no model
    steps = read_report(out.with_name("r.steps.csv"))
    assert list(steps.columns) == list(STEP_COLUMNS)
    assert steps.groupby("run").size().to_dict() == {0: 4, 1: 3, 3: 4}


def pd_isna(value) -> bool:
    return value is None or value != value


def test_ctrl_c_writes_an_interrupted_row_and_stops(toys, tmp_path):
    body = """
    [[include]]
    "model.name" = "interrupting"
    [[include]]
    "model.name" = "tiny-mlp"
    """
    out = tmp_path / "r.csv"
    # In the suite's process (isolate = false): a KeyboardInterrupt inside the run is Ctrl-C.
    # (Isolated runs ignore SIGINT; tests/execution/test_faults.py sends the suite a real one.)
    suite = load_suite(suite_file(tmp_path, body), ["suite.isolate=false"])
    outcome = run_suite(suite, out, CPU)
    assert outcome.interrupted
    assert read_report(out)["status"].tolist() == ["completed", "interrupted"]


def test_same_seed_same_loss_curve(toys, tmp_path):
    body = """
    [matrix]
    "deq.gradient" = ["phantom"]
    """
    suite = load_suite(suite_file(tmp_path, body, steps=3))
    a = train_run(suite.runs[0], CPU)
    b = train_run(suite.runs[0], CPU)
    assert [r["loss"] for r in a.steps] == [r["loss"] for r in b.steps]
    assert a.metrics["eval_loss"] == b.metrics["eval_loss"]


def test_bf16_autocast_runs(toys, tmp_path):
    suite = load_suite(suite_file(tmp_path, "", steps=2), ["recipe.precision=bf16"])
    out = train_run(suite.runs[0], CPU)
    assert out.metrics["status"] == "completed" and out.metrics["steps_done"] == 2


_RSS_SCRIPT = """
import torch
from deqbench.runs.train.run import reset_peak_rss, run_peak_rss_mb
if not reset_peak_rss():
    print("unsupported")
else:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
    high = run_peak_rss_mb()
    del block
    reset_peak_rss()
    print(high, run_peak_rss_mb())
"""


def test_peak_rss_is_reset_between_runs():
    # in a fresh process: another test's threads or allocator state cannot move its resident set
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if done.stdout.strip() == "unsupported":
        pytest.skip("no /proc/self/clear_refs on this platform")
    high, after = map(float, done.stdout.split())
    assert after < high - 32


def test_segmentation_run_reports_miou_and_pixel_accuracy(toys, tmp_path):
    overrides = [
        'model.name="tiny-seg"',
        'dataset.name="synthetic"',
        "dataset.image_size=8",
        'dataset.options={task="segmentation", length=16, eval_length=8}',
    ]
    suite = load_suite(suite_file(tmp_path, "", steps=2), overrides)
    out = train_run(suite.runs[0], CPU)
    m = out.metrics
    assert m["status"] == "completed", m
    assert 0 <= m["eval_miou"] <= 100 and 0 <= m["eval_pixel_acc"] <= 100
    assert "eval_top1" not in m and m["eval_loss"] > 0


def test_evaluation_solves_with_its_own_settings(toys, tmp_path):
    """``[eval]`` may set the forward solve of evaluation apart from training's (test-time
    compute): training's steps stay the same, and each evaluation forward stops at its own cap."""
    path = suite_file(tmp_path, "", steps=2)
    base = train_run(load_suite(path).runs[0], CPU)
    capped_run = load_suite(path, ["eval.f_max_iter=1", 'eval.solver="fixed-point"']).runs[0]
    capped = train_run(capped_run, CPU)
    assert [r["loss"] for r in capped.steps] == [r["loss"] for r in base.steps]
    assert capped.metrics["eval_nfe_mean"] == 1 < base.metrics["eval_nfe_mean"]
    assert capped.metrics["eval_loss"] != base.metrics["eval_loss"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('eval.solver="andersn"', "eval.solver: unknown solver 'andersn'; did you mean 'anderson'"),
        ("eval.solver_options={m=3}", "eval.solver_options: options of an evaluation solver"),
        ("eval.f_max_iter=0", "eval.f_max_iter: input should be greater than or equal to 1"),
    ],
)
def test_evaluation_solver_settings_are_validated(toys, tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_suite(suite_file(tmp_path, "", steps=2), [override])


def test_each_step_times_its_backward(toys, tmp_path, monkeypatch):
    # A clock that advances one second per reading: the backward's two readings are the
    # step's only consecutive ones, so each backward takes exactly 1000 ms on it.
    from deqbench.runs.train.steplog import StepLog

    ticks = iter(range(10_000))
    monkeypatch.setattr(StepLog, "mark", lambda self: float(next(ticks)))
    suite = load_suite(suite_file(tmp_path, "", steps=6, warmup=2))
    out = train_run(suite.runs[0], CPU)
    assert [r["backward_ms"] for r in out.steps] == [1000.0] * 6
    # The median over the settled equilibrium steps: the first and the metered one left out.
    assert out.metrics["backward_ms_median"] == 1000.0
    assert out.metrics["step_ms_median"] == 3000.0  # record, backward start, backward end
