"""A training run's ``reproduced`` verdict (`deqbench.runs.train.run`): judged on its final
evaluation (scripted here to a top-1 of 80 %), ``no`` for a run that failed, ``n/a`` without a
figure, and written with the figure it was checked against."""

from __future__ import annotations

import textwrap

import pytest
import torch

from deqbench import plugins
from deqbench.errors import ConfigError
from deqbench.execution.runner import run_suite
from deqbench.report.results import read_report
from deqbench.runs.train import run as run_module
from deqbench.runs.train.kind import TRAIN
from deqbench.runs.train.run import train_run
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys

SUITE = """
[suite]
name = "ref"
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

[recipe]
steps = 2

[eval]
max_batches = 1
grad_check = false

[reference]
band = 1.0
source = "toy paper, Table 1"

[matrix]
"reference.top1" = 80.5

[[include]]
"deq.gradient" = "jfb"
"reference.top1" = 78.0

[[include]]
"model.options.fail_at_step" = 0
"reference.top1" = 80.0

[[include]]
"deq.solver" = "fixed-point"
"""


@pytest.fixture
def scripted(monkeypatch):
    """Toy plugins, and a final evaluation whose top-1 is 80 %."""
    plugins.reset_registry(("train-toys", TrainToys()))
    evaluate = run_module.evaluate

    def eighty(*args, **kwargs):
        result, traces = evaluate(*args, **kwargs)
        return {**result, "eval_top1": 80.0}, traces

    monkeypatch.setattr(run_module, "evaluate", eighty)
    yield
    plugins.reset_registry()


def test_each_row_is_judged_on_its_final_evaluation(scripted, tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path)
    run_suite(suite, tmp_path / "r.csv", torch.device("cpu"))
    frame = read_report(tmp_path / "r.csv")
    assert frame["status"].tolist() == ["completed", "completed", "error", "completed"]
    assert frame["eval_top1"].tolist()[:2] == [80.0, 80.0]
    # |80 − 80.5| = 0.5 ≤ 1: yes; |80 − 78| = 2 > 1: no; failed: no; no figure: n/a
    assert frame["reproduced"].tolist() == ["yes", "no", "no", "n/a"]
    assert frame["reference_value"].tolist()[:3] == [80.5, 78.0, 80.0]
    assert frame["reference_value"].isna().tolist() == [False] * 3 + [True]
    assert frame["reference_metric"].tolist()[:3] == ["eval_top1"] * 3
    assert frame["reference_band"].tolist()[:3] == [1.0] * 3
    assert frame["reference_source"].tolist()[:3] == ["toy paper, Table 1"] * 3
    assert "reference" not in " ".join(frame["options"])  # a figure is no run option
    (table,) = TRAIN.summary(frame.to_dict("records"))
    column = next(c for c in table.columns if c.header == "reproduced")
    assert list(column.cells) == ["yes ✓", "no ✗", "no ✗", "n/a"]
    assert table.caption.splitlines()[-1] == (  # under the ≈ legend of the tied top-1s
        "reproduced: top-1 within 1 of 80.5 % (toy paper, Table 1); "
        "top-1 within 1 of 78 % (toy paper, Table 1); top-1 within 1 of 80 % (toy paper, Table 1)"
    )


def test_a_figure_for_another_task_is_refused_before_training(scripted, tmp_path):
    # blobs declares no task up front, so only the run knows it is classification
    path = tmp_path / "suite.toml"
    base = SUITE.split("[matrix]")[0].replace("band = 1.0", "miou = 70.0\nband = 1.0")
    path.write_text(textwrap.dedent(base))
    (run,) = load_suite(path).runs
    refusal = r"reference\.miou: a segmentation metric, but the run is for classification"
    with pytest.raises(ConfigError, match=refusal):
        train_run(run, torch.device("cpu"))
