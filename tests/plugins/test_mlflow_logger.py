"""The ``mlflow`` logger plugin on a local file store: a 3-step digits training logs its config
as params, its step losses and evaluation as metrics and its row's figures and status, read back
with MlflowClient from the store."""

from __future__ import annotations

import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.testing.loggers import smoke_report, smoke_suite
from deqbench.testing.train_toys import TrainToys
from deqbench_plugins.mlflow_logger import MlflowLogger, default_store

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # the logger sets it for its file store; set and deleted here, so it is unset after
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    plugins.reset_registry(("train-toys", TrainToys()))
    yield
    plugins.reset_registry()


def _history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, name)]


@pytest.mark.parametrize("where", ["beside the report", "a tracking uri"])
def test_a_run_logs_params_steps_eval_and_row(toys, cli, tmp_path, where):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "r.csv"
    store = default_store(out) if where == "beside the report" else tmp_path / "elsewhere"
    options = {} if where == "beside the report" else {"tracking_uri": store.as_uri()}
    options["experiment"] = "deq-smoke"
    suite = smoke_suite(tmp_path, ["mlflow"], {"mlflow": options})
    result = cli.invoke(main, ["run", str(suite), "--out", str(out), "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert store.is_dir() and (store == tmp_path / "r.mlruns") == (where == "beside the report")
    row, steps = smoke_report(out)
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("deq-smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run-000-tiny-deq" and run.info.status == "FINISHED"
    assert run.data.tags["deqbench.status"] == "completed"
    assert run.data.tags["deqbench.suite"] == "logged"
    params = run.data.params
    assert params["dataset.name"] == "digits" and params["recipe.lr"] == "0.05"
    assert params["run.max_steps"] == "3"
    rid = run.info.run_id
    assert _history(client, rid, "train/loss") == [
        (s["step"], pytest.approx(s["loss"])) for s in steps
    ]
    assert [step for step, _ in _history(client, rid, "train/loss")] == [0, 1, 2]
    assert _history(client, rid, "eval/top1") == [(3, pytest.approx(row["eval_top1"]))]
    assert _history(client, rid, "eval_top1") == [(3, pytest.approx(row["eval_top1"]))]
    assert _history(client, rid, "steps_done") == [(3, 3.0)]


def test_a_failed_run_is_marked_failed(toys, tmp_path):
    from mlflow.tracking import MlflowClient

    from deqbench.loggers import LoggedRun

    logger = MlflowLogger(experiment="e")
    report = tmp_path / "r.csv"
    logger.start(LoggedRun("s", 0, "", report, {"deq": {"solver": "anderson"}}))
    logger.log_scalars(0, {"train/loss": 2.0})
    logger.close(RuntimeError("boom"))
    client = MlflowClient(tracking_uri=default_store(report).resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["deqbench.error"] == "RuntimeError: boom"
    assert run.data.params == {"deq.solver": "anderson"}


def test_tags_must_be_strings():
    with pytest.raises(ValueError, match="tags must be a table of strings"):
        MlflowLogger(tags={"a": 1})
