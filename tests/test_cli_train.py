"""`deqbench run` on a tiny training suite, end to end through click's CliRunner."""

from __future__ import annotations

import json
import textwrap

import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.results import STEP_COLUMNS, TRACE_COLUMNS, TRAIN_COLUMNS, read_report
from deqbench.testing.train_toys import TrainToys

SUITE = """
[suite]
name = "tiny-cli"
kind = "train"
seed = 5
device = "cpu"

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[deq]
f_max_iter = 12

[recipe]
optimizer = "sgd"
lr = 0.05
epochs = 3
unrolled_warmup_steps = 2

[matrix]
"deq.gradient" = ["ift", "jfb"]

[[include]]
"model.name" = "tiny-mlp"
"""


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


def test_run_writes_the_training_report(toys, cli, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "tiny.csv"
    args = ["run", str(path), "--out", str(out), "--max-steps", "3", "--max-eval-batches", "1"]
    result = cli.invoke(main, [*args, "--set", "dataset.options.eval=16"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert list(frame.columns) == list(TRAIN_COLUMNS)
    assert frame["run"].tolist() == [0, 1, 2]
    assert frame["model"].tolist() == ["tiny-deq", "tiny-deq", "tiny-mlp"]
    assert (frame["kind"] == "train").all() and (frame["suite"] == "tiny-cli").all()
    assert (frame["status"] == "completed").all() and (frame["seed"] == 5).all()
    assert (frame["max_steps"] == 3).all() and (frame["steps_done"] == 3).all()
    assert [json.loads(o) for o in frame["options"]] == [
        {"deq.gradient": "ift"},
        {"deq.gradient": "jfb"},
        {"model.name": "tiny-mlp"},
    ]
    deq, mlp = frame.iloc[:2], frame.iloc[2]
    # the smoke run caps the warm-up at half its steps: 1 unrolled, then 2 in equilibrium
    assert deq["unrolled_steps"].tolist() == [1, 1] and deq["equilibrium_steps"].tolist() == [2, 2]
    assert (mlp["unrolled_steps"], mlp["equilibrium_steps"]) == (0, 3)
    assert deq["gradient"].tolist() == ["ift", "jfb"] and (deq["f_max_iter"] == 12).all()
    assert (deq["f_nfe_mean"] <= 12).all() and (deq["f_nfe_mean"] >= 1).all()
    assert deq["b_nfe_mean"].notna().tolist() == [True, False]  # jfb solves no backward
    assert mlp[["solver", "gradient", "f_nfe_mean", "eval_nfe_mean"]].isna().all()
    # eval on 1 batch of 8 samples: accuracies are multiples of 12.5 %
    assert ((frame["eval_top1"] / 12.5) % 1 == 0).all()
    assert (frame["params"] > 0).all() and (frame["rss_peak_mb"] > 0).all()
    assert frame["peak_mem_mb"].isna().all()  # CPU: no CUDA peak
    assert (frame["epochs_done"] == 3 / 6).all()  # 48 samples / 8 per step = 6 steps an epoch
    steps = read_report(out.with_name("tiny.steps.csv"))
    assert list(steps.columns) == list(STEP_COLUMNS) and len(steps) == 9
    assert steps[steps.run == 0]["mode"].tolist() == ["unrolled", "equilibrium", "equilibrium"]
    final = steps.groupby("run")["loss"].last().tolist()
    assert final == pytest.approx(frame["train_loss_final"].tolist())
    traces = read_report(out.with_name("tiny.traces.csv"))
    assert list(traces.columns) == list(TRACE_COLUMNS) and set(traces["run"]) == {0, 1}
    meta = json.loads(out.with_name("tiny.meta.json").read_text())
    assert meta["kind"] == "train" and meta["runs"] == 3
    # no terminal: one plain line per run, then the final table
    assert result.output.count("run ") >= 3 and "run 3/3 tiny-mlp completed" in result.output
    assert "top-1 %" in result.output


def test_validate_and_bad_keys(toys, cli, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    ok = cli.invoke(main, ["validate", str(path)])
    assert ok.exit_code == 0 and "expands to 3 runs" in ok.output
    bad = cli.invoke(main, ["validate", str(path), "--set", "recipe.optimiser=adam"])
    assert bad.exit_code == 2
    assert "recipe.optimiser: unknown key; did you mean 'optimizer'" in bad.output
    assert "Traceback" not in bad.output
    limit = cli.invoke(main, ["run", str(path), "--limit", "3"])
    assert limit.exit_code == 2 and "--max-steps" in limit.output


def test_live_display_on_a_terminal(toys, tmp_path):
    import io

    from rich.console import Console

    from deqbench.display import TrainDisplay
    from deqbench.runner import run_suite
    from deqbench.suite import load_suite
    from deqbench.train_suite import smoke_train

    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    suite = smoke_train(load_suite(path), max_steps=2)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140)
    with TrainDisplay(console, suite.name, len(suite.runs)) as display:
        assert display.live_mode
        outcome = run_suite(
            suite, tmp_path / "t.csv", suite_device(), display.run_finished, display
        )
        display.progress({"step": 1, "loss": 0.5, "f_nfe": 7, "f_rel_residual": 1e-4})
        assert "NFE 7" in display.run.tasks[-1].fields["info"]
    assert (
        [r["status"] for r in display.rows]
        == ["completed"] * 3
        == [r["status"] for r in outcome.rows]
    )
    text = buffer.getvalue()
    assert "tiny-cli" in text and "tiny-mlp" in text and "step ms" in text


def suite_device():
    import torch

    return torch.device("cpu")
