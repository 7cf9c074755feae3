"""Runs from given weights (`deqbench.runs.train.weights`): every deqbench layout read back
exactly, one-line refusals, and an evaluation-only run equal to the trained run's evaluation."""

from __future__ import annotations

import textwrap

import pytest
import torch

from deqbench import plugins
from deqbench.errors import CheckpointError, ConfigError
from deqbench.models import DEQSettings, save_model
from deqbench.runs.train.run import identity, train_run
from deqbench.runs.train.weights import load_weights
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TinyDEQ, TrainToys

CPU = torch.device("cpu")


@pytest.fixture
def toys():
    yield plugins.reset_registry(("train-toys", TrainToys()))
    plugins.reset_registry()


def toy(seed: int) -> TinyDEQ:
    torch.manual_seed(seed)
    return TinyDEQ(num_classes=3, input_dim=16, deq=DEQSettings())


def equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    mine, theirs = a.state_dict(), b.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("layout", ["state dict", "DataParallel", "save_model", "run checkpoint"])
def test_every_deqbench_layout_loads_exactly(tmp_path, layout):
    original, fresh = toy(0), toy(1)
    state = original.state_dict()
    payload = {
        "state dict": state,
        "DataParallel": {f"module.{k}": v for k, v in state.items()},
        "run checkpoint": {"format": 1, "state": {"model": state, "step": 3}},
    }.get(layout)
    path = tmp_path / "w.pt"
    if layout == "save_model":
        save_model(original, path, name="tiny-deq")
    else:
        torch.save(payload, path)
    assert not equal(fresh, original)
    assert load_weights(fresh, path) == "deqbench"
    assert equal(fresh, original)


def test_a_misfit_is_one_line_naming_the_file_and_the_first_key(tmp_path):
    state = toy(0).state_dict()
    cases = {
        "extra": (state | {"head.scale": torch.zeros(3)}, "unexpected key 'head.scale'"),
        "narrow": (
            state | {"deq.cell.linear.weight": torch.zeros(2, 2)},
            "'deq.cell.linear.weight' has shape (2, 2), expected (8, 8)",
        ),
        "short": (
            {k: v for k, v in state.items() if k != "deq.cell.linear.bias"},
            "missing key 'deq.cell.linear.bias'",
        ),
    }
    for name, (payload, problem) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(CheckpointError) as info:
            load_weights(toy(1), path)
        assert str(info.value) == f"{path}: {problem} for TinyDEQ"
    with pytest.raises(ConfigError, match=r"TinyDEQ reads no 'deqbnch'; did you mean 'deqbench'"):
        load_weights(toy(1), tmp_path / "extra.pt", "deqbnch")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a loadable weights file"):
        load_weights(toy(1), tmp_path / "junk.pt")


SUITE = """
[suite]
name = "tiny-eval"
kind = "train"
device = "cpu"
keep_checkpoints = true
[dataset]
name = "blobs"
image_size = 4
batch_size = 8
options = { eval = 24 }
[model]
name = "tiny-deq"
[eval]
max_batches = 2
sweep = { f_max_iter = [2] }
"""


def test_an_eval_only_run_evaluates_the_given_weights_as_the_trained_run_did(toys, tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(SUITE) + "[recipe]\nlr = 0.05\nsteps = 3\n")
    trained = load_suite(path).runs[0]
    checkpoint = tmp_path / "run-0000.pt"
    done = train_run(trained, CPU, report=tmp_path / "r.csv", checkpoint=checkpoint)
    assert checkpoint.is_file() and done.metrics["steps_done"] == 3
    path.write_text(textwrap.dedent(SUITE).replace("[eval]", f'weights = "{checkpoint}"\n[eval]'))
    suite = load_suite(path)  # no [recipe]: evaluate only
    assert suite.warnings == () and suite.runs[0].spec.recipe.evaluate_only
    evaluated = train_run(suite.runs[0], CPU)
    m, t = evaluated.metrics, done.metrics
    assert (m["status"], m["steps_done"], m["train_loss_final"]) == ("completed", 0, None)
    for column in ("eval_top1", "eval_loss", "eval_nfe_mean", "eval_count", "params"):
        assert m[column] == t[column], column
    assert [e["eval_top1"] for e in evaluated.evals] == [e["eval_top1"] for e in done.evals]
    assert m["eval_s"] > 0 and evaluated.steps == []
    assert identity("tiny-eval", suite.runs[0], CPU)["weights"] == str(checkpoint)


def test_a_run_without_weights_or_length_is_warned_about(toys, tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(SUITE))
    (warning,) = load_suite(path).warnings
    assert warning.startswith("1 run(s) set neither recipe.epochs nor recipe.steps")
