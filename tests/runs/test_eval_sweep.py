"""Test-time compute of training runs: ``[eval] sweep`` (the trained model evaluated again at
other forward settings, one ``evals.csv`` row each) and ``[eval] path_independence``."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest
import torch

from deqbench import plugins
from deqbench.errors import ConfigError
from deqbench.execution.runner import run_suite
from deqbench.report.results import read_report
from deqbench.runs.train import run as train_module
from deqbench.runs.train.columns import EVAL_COLUMNS
from deqbench.runs.train.run import train_run
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys

CPU = torch.device("cpu")
PI = ("agreement_noise", "agreement_swap", "distance_noise", "distance_swap")


@pytest.fixture
def toys():
    yield plugins.reset_registry(("train-toys", TrainToys()))
    plugins.reset_registry()


def suite_file(tmp_path: Path, eval_table: str, extra: str = "") -> Path:
    path = tmp_path / "suite.toml"
    body = """
        [suite]
        name = "tiny-ttc"
        kind = "train"
        device = "cpu"
        [dataset]
        name = "blobs"
        image_size = 4
        batch_size = 8
        options = { eval = 12 }
        [model]
        name = "tiny-deq"
        [recipe]
        lr = 0.01
        steps = 3
        [eval]
        max_batches = 2
        """
    path.write_text(textwrap.dedent(body) + textwrap.dedent(eval_table) + textwrap.dedent(extra))
    return path


def test_a_suite_writes_sweep_rows_and_path_independence_columns(toys, tmp_path):
    """Tolerances no solve can reach, so each row's NFE is its cap exactly; the tiny DEQ is a
    contraction, so every start reaches the same equilibrium. The explicit run has neither."""
    eval_table = """
        path_independence = true
        sweep = { f_max_iter = [1, 3], f_tol = [1e-12, 1e-11] }
        """
    include = """
        [[include]]
        "model.name" = "tiny-mlp"
        """
    out = tmp_path / "r.csv"
    run_suite(load_suite(suite_file(tmp_path, eval_table, include)), out, CPU)
    frame = read_report(out)
    assert frame["status"].tolist() == ["completed", "completed"]
    deq, mlp = frame.to_dict("records")
    assert deq["eval_pi_agreement_noise"] == deq["eval_pi_agreement_swap"] == 1.0
    assert 0 <= deq["eval_pi_distance_noise"] < 1e-3 and 0 <= deq["eval_pi_distance_swap"] < 1e-3
    assert all(mlp[f"eval_pi_{name}"] != mlp[f"eval_pi_{name}"] for name in PI)  # NaN: empty
    evals = read_report(tmp_path / "r.evals.csv")
    assert list(evals.columns) == list(EVAL_COLUMNS)
    assert evals["run"].tolist() == [0] * 4  # none for the explicit run 1
    settings = [json.loads(s) for s in evals["setting"]]
    assert settings == [
        {"f_max_iter": 1, "f_tol": 1e-12},
        {"f_max_iter": 1, "f_tol": 1e-11},
        {"f_max_iter": 3, "f_tol": 1e-12},
        {"f_max_iter": 3, "f_tol": 1e-11},
    ]
    assert evals["f_max_iter"].tolist() == [1, 1, 3, 3]
    assert evals["f_tol"].tolist() == [1e-12, 1e-11, 1e-12, 1e-11]
    assert evals["eval_nfe_mean"].tolist() == [1.0, 1.0, 3.0, 3.0]  # the cap, every batch
    assert (evals["eval_count"] == 12).all() and (evals["eval_s"] > 0).all()
    assert evals["eval_top1"].between(0, 100).all()
    # a larger cap solves further: the residual falls
    residual = evals["eval_f_rel_residual_median"].tolist()
    assert residual[2] < residual[0]


def test_a_setting_applies_over_the_eval_solver_settings(toys, tmp_path):
    eval_table = """
        f_tol = 1e-12
        solver = "fixed-point"
        sweep = { f_max_iter = [2, 5] }
        """
    out = train_run(load_suite(suite_file(tmp_path, eval_table)).runs[0], CPU)
    assert [(r["setting"], r["f_max_iter"], r["f_tol"]) for r in out.evals] == [
        ('{"f_max_iter": 2}', 2, 1e-12),
        ('{"f_max_iter": 5}', 5, 1e-12),
    ]
    assert [r["eval_nfe_mean"] for r in out.evals] == [2.0, 5.0]
    assert "eval_pi_agreement_noise" not in out.metrics  # path independence is opt-in


def test_the_sweep_is_not_training_time(toys, tmp_path, monkeypatch):
    real = train_module.sweep

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "sweep", slow)
    run = load_suite(suite_file(tmp_path, "sweep = { f_max_iter = [2] }")).runs[0]
    out = train_run(run, CPU)
    assert len(out.evals) == 1 and out.metrics["train_s"] < 1.0


def test_an_explicit_model_writes_no_sweep_rows(toys, tmp_path):
    path = suite_file(tmp_path, "path_independence = true\nsweep = { f_max_iter = [2] }\n")
    out = train_run(load_suite(path, ['model.name="tiny-mlp"']).runs[0], CPU)
    assert out.metrics["status"] == "completed" and out.evals == []
    assert not any(k.startswith("eval_pi_") for k in out.metrics)


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("{ f_mx_iter = [2] }", "eval.sweep.f_mx_iter: unknown key; did you mean 'f_max_iter'?"),
        ("{ f_max_iter = [2, 0] }", "eval.sweep.f_max_iter[1]: input should be greater than or"),
        ("{ f_max_iter = [2, 2] }", "eval.sweep.f_max_iter: value error, give each value once"),
        ("{ f_max_iter = [] }", "eval.sweep.f_max_iter: list should have at least 1 item"),
        ("{ f_tol = [1e-3, -1.0] }", "eval.sweep.f_tol[1]: input should be greater than 0"),
        ("{ f_max_iter = 4 }", "eval.sweep.f_max_iter: input should be a valid list, got 4"),
    ],
)
def test_sweeps_are_validated(toys, tmp_path, sweep, message):
    path = suite_file(tmp_path, f"sweep = {sweep}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_suite(path)
