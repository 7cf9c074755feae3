"""``[logging]`` at validation: loggers listed, unknown names and options with "did you mean",
a missing package as one line naming what to install, and the deprecated ``tensorboard``."""

from __future__ import annotations

import importlib.util
import json

import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.report import tensorboard as logging_tb
from deqbench.suite.load import load_suite
from deqbench.testing.loggers import smoke_suite
from deqbench.testing.train_toys import TrainToys


@pytest.fixture
def toys():
    plugins.reset_registry(("train-toys", TrainToys()))
    yield
    plugins.reset_registry()


def test_list_shows_the_loggers_and_their_plugins(cli):
    result = cli.invoke(main, ["list", "loggers", "--json"])
    assert result.exit_code == 0, result.output
    listed = {item["name"]: item["plugin"] for item in json.loads(result.output)}
    assert listed == {"tensorboard": "deqbench", "wandb": "wandb", "mlflow": "mlflow"}
    everything = cli.invoke(main, ["list", "--json"])
    kinds = {(i["kind"], i["name"]) for i in json.loads(everything.output)}
    assert {("loggers", "wandb"), ("loggers", "mlflow"), ("solvers", "anderson")} <= kinds


def _validate(cli, path, *overrides: str):
    args = ["validate", str(path)]
    for override in overrides:
        args += ["--set", override]
    result = cli.invoke(main, args)
    assert "Traceback" not in result.output
    return result


def _one_error(result) -> str:
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    return line


def test_an_unknown_logger_is_one_line_with_did_you_mean(toys, cli, tmp_path):
    path = smoke_suite(tmp_path, ["mlfow"])
    line = _one_error(_validate(cli, path))
    assert line == f"error: {path}: logging.loggers: unknown logger 'mlfow'; did you mean 'mlflow'?"


def test_options_of_an_unknown_logger_or_an_unknown_option_fail(toys, cli, tmp_path):
    path = smoke_suite(tmp_path, [], {"wandbb": {"project": "x"}})
    line = _one_error(_validate(cli, path))
    assert line.endswith("logging.options.wandbb: unknown logger 'wandbb'; did you mean 'wandb'?")
    path = smoke_suite(tmp_path, ["wandb"], {"wandb": {"projct": "x"}})
    line = _one_error(_validate(cli, path))
    assert line.endswith("logging.options.wandb.projct: unknown option; did you mean 'project'?")


def test_a_bad_option_value_fails_before_any_run(toys, cli, tmp_path):
    path = smoke_suite(tmp_path, ["wandb"], {"wandb": {"mode": "sometimes"}})
    line = _one_error(_validate(cli, path))
    assert "logging.options.wandb: mode must be one of online, offline, disabled" in line


def _without(monkeypatch, *absent: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a)
    )


@pytest.mark.parametrize(
    ("logger", "package", "install"),
    [
        ("wandb", "wandb", "pip install 'deqbench[wandb]'"),
        ("mlflow", "mlflow", "pip install 'deqbench[mlflow]'"),
        ("tensorboard", "tensorboard", "pip install tensorboard"),
    ],
)
def test_a_missing_package_names_what_to_install(
    toys, cli, tmp_path, monkeypatch, logger, package, install
):
    _without(monkeypatch, package)
    path = smoke_suite(tmp_path, ["tensorboard", logger] if logger != "tensorboard" else [logger])
    monkeypatch.setattr(logging_tb, "tensorboard_available", lambda: package != "tensorboard")
    line = _one_error(_validate(cli, path))
    assert line == (
        f"error: {path}: logging.loggers: logger {logger!r} needs the {package} package, "
        f"which is not installed; install it: {install}"
    )
    run = cli.invoke(main, ["run", str(path), "--out", str(tmp_path / "r.csv")])
    assert run.exit_code == 2 and not (tmp_path / "r.csv").exists()  # nothing started
    ok = _validate(cli, path, "logging.loggers=[]")
    assert ok.exit_code == 0, ok.output


def test_tensorboard_true_is_a_deprecated_alias(toys, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(logging_tb, "tensorboard_available", lambda: True)
    path = smoke_suite(tmp_path, [])
    result = _validate(cli, path, "logging.tensorboard=true")
    assert result.exit_code == 0, result.output
    assert 'is deprecated; write [logging] loggers = ["tensorboard"]' in result.output
    suite = load_suite(path, ["logging.tensorboard=true", 'logging.loggers=["mlflow"]'])
    assert suite.runs[0].spec.logging.selected() == ["mlflow", "tensorboard"]
    both = load_suite(path, ["logging.tensorboard=true", 'logging.loggers=["tensorboard"]'])
    assert both.runs[0].spec.logging.selected() == ["tensorboard"]


def test_a_logger_named_twice_fails(toys, cli, tmp_path):
    path = smoke_suite(tmp_path, ["mlflow", "mlflow"])
    assert "name each logger once" in _one_error(_validate(cli, path))


def test_a_matrix_may_sweep_the_loggers(toys, tmp_path):
    path = smoke_suite(tmp_path, [])
    suite = load_suite(path, ['matrix."logging.loggers"=[[], ["mlflow"]]'])
    assert [run.spec.logging.selected() for run in suite.runs] == [[], ["mlflow"]]
