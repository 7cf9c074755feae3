"""`deqbench eval`: a checkpoint of a short digits training run, evaluated with the suite's
settings, gives the training run's final evaluation exactly; what it refuses, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from deqbench.cli import main
from deqbench.report.results import read_report

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "suites" / "digits.toml"
#: One MDEQ run of the digits suite, in this process, evaluated on one batch of 360 images.
NARROW = (
    'matrix."deq.solver"=["anderson"]',
    'matrix."deq.gradient"=["ift"]',
    "include=[]",
    "suite.isolate=false",
    "suite.threads=1",
    "eval.grad_check=false",
)


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_eval_of_a_training_checkpoint_equals_the_training_runs_evaluation(
    fresh_registry, cli, tmp_path
):
    trained = tmp_path / "train.csv"
    args = ["--max-eval-batches", "1", *sets(*NARROW)]
    keep = sets("suite.keep_checkpoints=true")
    run = ["run", str(DIGITS), "--out", str(trained), "--max-steps", "2", *args, *keep]
    result = cli.invoke(main, run)
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "train.checkpoints" / "run-0000.pt"
    out = tmp_path / "eval.csv"
    result = cli.invoke(main, ["eval", str(DIGITS), str(checkpoint), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    train, evaluated = read_report(trained).iloc[0], read_report(out).iloc[0]
    assert (train["steps_done"], evaluated["steps_done"]) == (2, 0)
    assert evaluated["status"] == "completed" and evaluated["weights"] == str(checkpoint)
    assert evaluated["eval_count"] == train["eval_count"] == 360
    assert evaluated["eval_top1"] == train["eval_top1"]
    assert evaluated["eval_loss"] == train["eval_loss"]
    assert evaluated["eval_nfe_mean"] == train["eval_nfe_mean"]


@pytest.mark.parametrize(
    ("suite", "extra", "message"),
    [
        ("solvers.toml", (), "suite.kind: deqbench eval takes a training suite"),
        ("digits.toml", ('include=[{"recipe.epochs" = 3}]',), "exactly one of epochs or steps"),
    ],
)
def test_eval_refuses_in_one_line(fresh_registry, cli, tmp_path, suite, extra, message):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    result = cli.invoke(main, ["eval", str(ROOT / "suites" / suite), str(weights), *sets(*extra)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: ") and message in line, line


def test_eval_names_a_missing_weights_file(fresh_registry, cli, tmp_path):
    missing = tmp_path / "none.pt"
    result = cli.invoke(main, ["eval", str(DIGITS), str(missing)])
    assert result.exit_code == 2
    assert f"model.weights: no such file {str(missing)!r}" in result.output
