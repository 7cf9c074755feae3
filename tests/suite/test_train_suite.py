"""Training suites: schema, "did you mean", matrix and include expansion, smoke caps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from deqbench import plugins
from deqbench.errors import ConfigError
from deqbench.suite.load import load_suite
from deqbench.suite.train import TrainSuite, smoke_train
from deqbench.testing.train_toys import TrainToys

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[suite]
name = "tiny"
kind = "train"
seed = 3
repeats = 2

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[deq]
solver = "anderson"

[recipe]
steps = 4
unrolled_warmup_steps = 2

[matrix]
"deq.solver" = ["anderson", "fixed-point"]
"deq.gradient" = ["ift", "jfb"]

[[include]]
"model.name" = "tiny-mlp"
"model.options.width" = 4
"""


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_matrix_and_include_expand_with_repeats(toys, tmp_path):
    suite = load_suite(write(tmp_path, BASE))
    assert isinstance(suite, TrainSuite) and suite.name == "tiny"
    assert len(suite.runs) == (2 * 2 + 1) * 2
    assert [r.index for r in suite.runs] == list(range(10))
    first, second = suite.runs[0], suite.runs[1]
    assert (first.seed, second.seed) == (3, 4) and first.options == second.options
    assert first.options == {"deq.solver": "anderson", "deq.gradient": "ift"}
    assert suite.runs[2].spec.deq.gradient == "jfb"
    combos = {(r.spec.deq.solver, r.spec.deq.gradient) for r in suite.runs[:8]}
    assert combos == {(s, g) for s in ("anderson", "fixed-point") for g in ("ift", "jfb")}
    mlp = suite.runs[-1]
    assert mlp.spec.model.name == "tiny-mlp" and mlp.spec.model.options == {"width": 4}
    assert mlp.spec.deq.solver == "anderson"  # the base's, untouched by the matrix


def test_overrides_apply_before_validation(toys, tmp_path):
    suite = load_suite(write(tmp_path, BASE), ["dataset.root=/data/x", "recipe.steps=7"])
    assert {r.spec.dataset.root for r in suite.runs} == {"/data/x"}
    assert {r.spec.recipe.steps for r in suite.runs} == {7}
    # a quoted part keeps its dots: narrow the matrix from the command line
    narrow = load_suite(write(tmp_path, BASE), ['matrix."deq.solver"="fixed-point"'])
    assert [r.spec.deq.solver for r in narrow.runs[:4]] == ["fixed-point"] * 4
    assert len(narrow.runs) == (2 + 1) * 2


BAD = [
    (("steps = 4", "stepz = 4"), r"recipe\.stepz: unknown key; did you mean 'steps'"),
    (("steps = 4", "steps = 4\nepochs = 2"), r"recipe: .*exactly one of epochs or steps"),
    (
        ('name = "tiny-deq"', 'name = "tiny-dq"'),
        r"model\.name: unknown model 'tiny-dq'; did you mean 'tiny-deq'",
    ),
    (
        ('"deq.solver" =', '"deq.solvr" ='),
        r"matrix\.deq\.solvr: unknown key deq\.solvr; did you mean 'solver'",
    ),
    (
        ('"deq.solver" =', '"dq.solver" ='),
        r"matrix\.dq\.solver: unknown table 'dq'; did you mean 'deq'",
    ),
    (
        ('["anderson", "fixed-point"]', '["anderson", "brodyen"]'),
        r"deq\.solver: unknown solver 'brodyen'; did you mean 'broyden'.*"
        r"\(in the run of matrix \{\"deq\.solver\": \"brodyen\"",
    ),
    (
        ('"model.options.width" = 4', '"model.options.widht" = 4'),
        r"model\.options\.widht: unknown option; did you mean 'width'.*in the run of include\[0\]",
    ),
    (
        ('kind = "train"', 'kind = "trian"'),
        r"suite\.kind: unknown kind 'trian'; did you mean 'train'",
    ),
    (
        ("batch_size = 8", "batch_size = 0"),
        r"dataset\.batch_size: input should be greater than or equal to 1, got 0",
    ),
]


@pytest.mark.parametrize(("edit", "message"), BAD)
def test_bad_files_name_file_key_and_expectation(toys, tmp_path, edit, message):
    path = write(tmp_path, BASE.replace(*edit))
    with pytest.raises(ConfigError, match=message) as info:
        load_suite(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_solver_options_are_checked_by_building_the_solver(toys, tmp_path):
    text = BASE + "\n[deq.solver_options]\nm = 0\n"
    text = text.replace('[deq]\nsolver = "anderson"\n', "")
    with pytest.raises(ConfigError, match=r"deq\.solver_options"):
        load_suite(write(tmp_path, text))


def test_smoke_caps_steps_eval_batches_and_warmup(toys, tmp_path):
    suite = smoke_train(load_suite(write(tmp_path, BASE)), max_steps=3, max_eval_batches=2)
    run = suite.runs[0]
    assert run.max_steps == 3 and run.spec.eval.max_batches == 2
    assert run.spec.recipe.unrolled_warmup_steps == 1  # half the smoke steps: both modes run
    assert run.spec.recipe.steps == 4  # the declared recipe is kept


def test_every_shipped_training_suite_validates():
    plugins.reset_registry()
    shipped = [
        p for p in sorted((ROOT / "suites").glob("*.toml")) if 'kind = "train"' in p.read_text()
    ]
    assert shipped, "no training suite is shipped"
    for path in shipped:
        suite = load_suite(path)
        assert suite.runs, path
        assert (
            len({json.dumps(r.options, sort_keys=True) for r in suite.runs})
            == len(suite.runs) // suite.spec.suite.repeats
        )


def test_shipped_digits_suite_runs_as_a_smoke_run(tmp_path):
    """One run per model of suites/digits.toml, 2 steps and 1 eval batch each."""
    import dataclasses

    import torch

    from deqbench.execution.runner import run_suite
    from deqbench.report.results import read_report

    plugins.reset_registry()
    suite = smoke_train(load_suite(ROOT / "suites/digits.toml"), max_steps=2, max_eval_batches=1)
    first = {}
    for run in suite.runs:
        first.setdefault(run.spec.model.name, run)
    assert set(first) == {"mdeq-cpu-small", "explicit-mdeq", "resnet18"}
    suite = dataclasses.replace(suite, runs=tuple(first.values()))
    run_suite(suite, tmp_path / "digits.csv", torch.device("cpu"))
    frame = read_report(tmp_path / "digits.csv")
    assert frame["status"].tolist() == ["completed"] * 3, frame["error"].tolist()
    assert (frame["steps_done"] == 2).all() and frame["eval_top1"].between(0, 100).all()
    assert frame["f_nfe_mean"].notna().tolist() == [True, False, False]


TASKS = """
[suite]
name = "tasks"
kind = "train"

[dataset]
name = "{dataset}"
options = {{ {options} }}

[model]
name = "{model}"
head = "{head}"

[recipe]
steps = 2
"""


@pytest.mark.parametrize(
    ("dataset", "options", "model", "head", "refusal"),
    [
        (
            "digits", "", "mdeq-cpu-small", "segmentation",
            "model.head: head 'segmentation' is for segmentation, but dataset 'digits' is a "
            "classification dataset; expected a classification head "
            '(model.head = "classification")',
        ),
        (
            "cityscapes", "", "mdeq-imagenet-small", "",
            "model.name: model 'mdeq-imagenet-small' is for classification, but dataset "
            "'cityscapes' is a segmentation dataset; expected a segmentation model",
        ),
        ("cityscapes", "", "resnet18", "", "model 'resnet18' is for classification"),
        (
            "synthetic", 'task = "segmentation"', "explicit-mdeq", "",
            "model 'explicit-mdeq' is for classification, but dataset 'synthetic' is a "
            "segmentation dataset",
        ),
        ("cifar10", "", "explicit-mdeq", "", None),
        ("cityscapes", "", "mdeq-cityscapes-small", "", None),
        ("cityscapes", "", "explicit-mdeq", "segmentation", None),
        ("synthetic", 'task = "segmentation"', "mdeq-cpu-small", "segmentation", None),
    ],
    ids=[
        "seg-head-on-digits", "imagenet-model-on-cityscapes", "resnet-on-cityscapes",
        "explicit-mdeq-on-seg-synthetic", "ok-explicit-on-cifar", "ok-cityscapes-model",
        "ok-seg-head-on-cityscapes", "ok-seg-head-on-seg-synthetic",
    ],
)  # fmt: skip
def test_a_model_for_another_task_than_the_dataset_is_refused_at_validation(
    fresh_registry, cli, tmp_path, dataset, options, model, head, refusal
):
    # Both tasks are declared (no data is read: the data roots need not exist here).
    from deqbench.cli import main

    path = write(tmp_path, TASKS.format(dataset=dataset, options=options, model=model, head=head))
    result = cli.invoke(main, ["validate", str(path)])
    if refusal is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert message.startswith(f"error: {path}: ") and refusal in message, message


def test_an_unparsed_sweep_is_told_the_type_of_the_dotted_key(toys, tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        load_suite(path, ['matrix."deq.f_max_iter"=[1'])
    expected = """matrix."deq.f_max_iter" takes an array of integers ≥ 1, e.g. --set """
    assert expected in str(err.value)


WEIGHTS = [
    ('weights = "missing.pt"', r"model\.weights: no such file 'missing\.pt'; expected a weights"),
    (
        'weights = "{w}"\nweights_format = "deqbnch"',
        r"model\.weights_format: model 'tiny-deq' reads no 'deqbnch'; did you mean 'deqbench'",
    ),
    ('weights_format = "deqbench"', r"model\.weights_format: a format of weights, but no model"),
]


@pytest.mark.parametrize(("keys", "message"), WEIGHTS)
def test_model_weights_are_checked_at_validation(toys, tmp_path, keys, message):
    (tmp_path / "w.pt").write_bytes(b"")
    text = BASE.replace(
        'name = "tiny-deq"', 'name = "tiny-deq"\n' + keys.format(w=tmp_path / "w.pt")
    )
    with pytest.raises(ConfigError, match=message) as info:
        load_suite(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_no_training_length_evaluates_only(toys, tmp_path):
    both_zero = load_suite(write(tmp_path, BASE), ["recipe.steps=0", "recipe.epochs=0"])
    assert all(run.spec.recipe.evaluate_only for run in both_zero.runs)
    assert both_zero.warnings[0].startswith("10 run(s) set neither recipe.epochs nor recipe.steps")
    with pytest.raises(ConfigError, match=r"recipe: .*exactly one of epochs or steps"):
        load_suite(write(tmp_path, BASE), ["recipe.epochs=2", "recipe.steps=0"])
    assert not load_suite(write(tmp_path, BASE)).runs[0].spec.recipe.evaluate_only
